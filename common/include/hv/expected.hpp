// hv::expected<T, E>: the subset of C++23 std::expected this project uses (g++ 12 lacks it).
// Layer: common. Header-only, no threads. Switching to std::expected is one alias change.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace hv {

template <class E>
class unexpected {
public:
    constexpr explicit unexpected(E e) : error_(std::move(e)) {}
    constexpr const E& error() const& noexcept { return error_; }
    constexpr E& error() & noexcept { return error_; }
    constexpr E&& error() && noexcept { return std::move(error_); }

private:
    E error_;
};

template <class E>
unexpected(E) -> unexpected<E>;

namespace detail {
[[noreturn]] inline void bad_expected_access() noexcept { std::abort(); }
}  // namespace detail

template <class T, class E>
class [[nodiscard]] expected {
public:
    using value_type = T;
    using error_type = E;

    constexpr expected() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
    template <class U = T>
        requires(std::is_constructible_v<T, U &&> &&
                 !std::is_same_v<std::remove_cvref_t<U>, expected> &&
                 !std::is_same_v<std::remove_cvref_t<U>, std::in_place_t>)
    constexpr expected(U&& v) : v_(std::in_place_index<0>, std::forward<U>(v)) {}
    template <class G>
    constexpr expected(const unexpected<G>& u) : v_(std::in_place_index<1>, u.error()) {}
    template <class G>
    constexpr expected(unexpected<G>&& u) : v_(std::in_place_index<1>, std::move(u).error()) {}
    template <class... Args>
    constexpr explicit expected(std::in_place_t, Args&&... args)
        : v_(std::in_place_index<0>, std::forward<Args>(args)...) {}

    constexpr bool has_value() const noexcept { return v_.index() == 0; }
    constexpr explicit operator bool() const noexcept { return has_value(); }

    constexpr T& value() & {
        check();
        return *std::get_if<0>(&v_);
    }
    constexpr const T& value() const& {
        check();
        return *std::get_if<0>(&v_);
    }
    constexpr T&& value() && {
        check();
        return std::move(*std::get_if<0>(&v_));
    }
    constexpr T& operator*() & noexcept { return value(); }
    constexpr const T& operator*() const& noexcept { return value(); }
    constexpr T&& operator*() && noexcept { return std::move(*this).value(); }
    constexpr T* operator->() noexcept { return &value(); }
    constexpr const T* operator->() const noexcept { return &value(); }

    constexpr const E& error() const& noexcept {
        if (has_value()) {
            detail::bad_expected_access();
        }
        return *std::get_if<1>(&v_);
    }
    constexpr E& error() & noexcept {
        if (has_value()) {
            detail::bad_expected_access();
        }
        return *std::get_if<1>(&v_);
    }

    template <class U>
    constexpr T value_or(U&& fallback) const& {
        return has_value() ? **this : static_cast<T>(std::forward<U>(fallback));
    }

    template <class F>
    constexpr auto and_then(F&& f) & {
        using R = std::remove_cvref_t<std::invoke_result_t<F, T&>>;
        return has_value() ? std::invoke(std::forward<F>(f), **this) : R(unexpected(error()));
    }
    template <class F>
    constexpr auto and_then(F&& f) && {
        using R = std::remove_cvref_t<std::invoke_result_t<F, T&&>>;
        return has_value() ? std::invoke(std::forward<F>(f), std::move(**this))
                           : R(unexpected(error()));
    }
    template <class F>
    constexpr auto transform(F&& f) & {
        return transform_impl(*this, std::forward<F>(f));
    }
    template <class F>
    constexpr auto transform(F&& f) && {
        return transform_impl(std::move(*this), std::forward<F>(f));
    }

private:
    template <class Self, class F>
    static constexpr auto transform_impl(Self&& self, F&& f) {
        using Arg = decltype(*std::forward<Self>(self));
        using U = std::remove_cvref_t<std::invoke_result_t<F, Arg>>;
        if constexpr (std::is_void_v<U>) {
            if (!self.has_value()) {
                return expected<void, E>(unexpected(self.error()));
            }
            std::invoke(std::forward<F>(f), *std::forward<Self>(self));
            return expected<void, E>();
        } else {
            if (!self.has_value()) {
                return expected<U, E>(unexpected(self.error()));
            }
            return expected<U, E>(std::invoke(std::forward<F>(f), *std::forward<Self>(self)));
        }
    }
    constexpr void check() const noexcept {
        if (!has_value()) {
            detail::bad_expected_access();
        }
    }
    std::variant<T, E> v_;
};

template <class E>
class [[nodiscard]] expected<void, E> {
public:
    using value_type = void;
    using error_type = E;

    constexpr expected() noexcept = default;
    template <class G>
    constexpr expected(const unexpected<G>& u) : err_(u.error()), ok_(false) {}
    template <class G>
    constexpr expected(unexpected<G>&& u) : err_(std::move(u).error()), ok_(false) {}

    constexpr bool has_value() const noexcept { return ok_; }
    constexpr explicit operator bool() const noexcept { return ok_; }
    constexpr void value() const {
        if (!ok_) {
            detail::bad_expected_access();
        }
    }
    constexpr void operator*() const noexcept { value(); }
    constexpr const E& error() const& noexcept {
        if (ok_) {
            detail::bad_expected_access();
        }
        return err_;
    }

    template <class F>
    constexpr auto and_then(F&& f) const {
        using R = std::remove_cvref_t<std::invoke_result_t<F>>;
        return ok_ ? std::invoke(std::forward<F>(f)) : R(unexpected(err_));
    }
    template <class F>
    constexpr auto transform(F&& f) const {
        using U = std::remove_cvref_t<std::invoke_result_t<F>>;
        if constexpr (std::is_void_v<U>) {
            if (ok_) {
                std::invoke(std::forward<F>(f));
                return expected<void, E>();
            }
            return expected<void, E>(unexpected(err_));
        } else {
            return ok_ ? expected<U, E>(std::invoke(std::forward<F>(f)))
                       : expected<U, E>(unexpected(err_));
        }
    }

private:
    E err_{};
    bool ok_ = true;
};

template <class T>
using Result = expected<T, std::error_code>;

/// The calling thread's errno as an error_code in the system category.
inline std::error_code errno_code() noexcept { return {errno, std::system_category()}; }
inline std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }
inline unexpected<std::error_code> fail(std::error_code ec) noexcept { return unexpected(ec); }
inline unexpected<std::error_code> fail_errno() noexcept { return unexpected(errno_code()); }
inline unexpected<std::error_code> fail_errno(int e) noexcept { return unexpected(errno_code(e)); }

}  // namespace hv

/// Evaluates a Result-returning expression and returns its error from the enclosing function.
#define HV_TRY(expr)                                   \
    do {                                               \
        auto hv_try_r_ = (expr);                       \
        if (!hv_try_r_) {                              \
            return ::hv::unexpected(hv_try_r_.error()); \
        }                                              \
    } while (0)

// Keeps hv_test_support non-empty while it is header-only.
namespace hv::test {
int support_anchor = 0;
}

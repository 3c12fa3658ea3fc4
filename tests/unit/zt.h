/* Minimal unit-test harness for zerostart's C tests: each tests/unit/test_*.c is one
 * executable whose main() runs ZT_RUN(fn) for each test function and returns ZT_DONE().
 * A failed ZT_CHECK marks the current test failed and keeps going; the last line printed
 * is "<file>: N passed, N failed". */
#ifndef ZT_H
#define ZT_H

#include <stdio.h>
#include <string.h>

static int zt_passed, zt_failed, zt_cur_failed;

#define ZT_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); zt_cur_failed = 1; } } while (0)
#define ZT_CHECK_MSG(cond, ...) do { if (!(cond)) { \
    fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); zt_cur_failed = 1; } } while (0)
/* Fails and returns from the test function when cond is false. */
#define ZT_REQUIRE(cond) do { if (!(cond)) { \
    fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); zt_cur_failed = 1; return; } } while (0)
/* Same, with a message (printf arguments). */
#define ZT_REQUIRE_MSG(cond, ...) do { if (!(cond)) { \
    fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); zt_cur_failed = 1; return; } } while (0)
#define ZT_CHECK_STR_CONTAINS(hay, needle) ZT_CHECK_MSG(strstr((hay), (needle)) != NULL, \
    "'%s' does not contain '%s'", (hay), (needle))

#define ZT_RUN(fn) do { zt_cur_failed = 0; fn(); \
    if (zt_cur_failed) { zt_failed++; fprintf(stderr, "not ok %s\n", #fn); } \
    else { zt_passed++; fprintf(stderr, "ok %s\n", #fn); } } while (0)
#define ZT_DONE() (printf("%s: %d passed, %d failed\n", __FILE__, zt_passed, zt_failed), zt_failed ? 1 : 0)

#endif

/* Unit tests for the Unicode normalizers (src/engine/unicode_normalize.h): Hangul
 * composition/decomposition, combining sequences and canonical ordering (short and long
 * runs), blocking, singletons, composition exclusions, compatibility mappings, characters
 * newer than the tables' Unicode 9.0, byte alignment, invalid UTF-8 and arguments, and
 * idempotence/consistency of all four forms over every code point.
 *
 * Also a driver for tests/py/test_tokenizer_nfc.py (which compares with the reference
 * tokenizers package and Python's unicodedata):
 *   test_unicode_normalize NFC|NFD|NFKC|NFKD
 *       stdin: UTF-8 text; stdout: the normalized text, or "!STATUS message" on error. */
#include "engine/unicode_normalize.h"
#include "zt.h"

#include <stdint.h>
#include <stdlib.h>

static const char *const FORM_NAME[] = {"NFC", "NFD", "NFKC", "NFKD"};

/* Normalizes a NUL-terminated string; returns malloc'd output (NULL on error). */
static char *norm(unorm_form f, const char *s) {
    zs_err_t err = {0};
    char *out = NULL;
    size_t n = 0;
    if (unorm_utf8(f, s, strlen(s), &out, &n, NULL, &err) != 0) return NULL;
    if (strlen(out) != n) { /* inputs here have no NUL */
        free(out);
        return NULL;
    }
    return out;
}

#define CHECK_NORM(f, in, want) do { \
    char *got_ = norm((f), (in)); \
    ZT_CHECK_MSG(got_ != NULL && strcmp(got_, (want)) == 0, "%s(%s) = %s, want %s", \
                 FORM_NAME[f], #in, got_ ? got_ : "(error)", #want); \
    free(got_); } while (0)

#define CHECK_ALL(in, nfc, nfd, nfkc, nfkd) do { \
    CHECK_NORM(UNORM_NFC, in, nfc); CHECK_NORM(UNORM_NFD, in, nfd); \
    CHECK_NORM(UNORM_NFKC, in, nfkc); CHECK_NORM(UNORM_NFKD, in, nfkd); } while (0)

static void test_ascii_and_empty(void) {
    CHECK_ALL("", "", "", "", "");
    CHECK_ALL("Hello, world!\n\t~", "Hello, world!\n\t~", "Hello, world!\n\t~",
              "Hello, world!\n\t~", "Hello, world!\n\t~");
    /* embedded NUL is ordinary text */
    zs_err_t err = {0};
    char *out = NULL;
    size_t n = 0;
    ZT_REQUIRE(unorm_utf8(UNORM_NFC, "a\0b", 3, &out, &n, NULL, &err) == 0);
    ZT_CHECK(n == 3 && memcmp(out, "a\0b", 3) == 0);
    free(out);
}

static void test_hangul(void) {
    /* 한 = U+D55C = L U+1112, V U+1161, T U+11AB */
    CHECK_ALL("\xED\x95\x9C", "\xED\x95\x9C", "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB",
              "\xED\x95\x9C", "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB");
    /* conjoining jamo compose: L+V -> LV, LV+T -> LVT */
    CHECK_NORM(UNORM_NFC, "\xE1\x84\x92\xE1\x85\xA1", "\xED\x95\x98");            /* 하 */
    CHECK_NORM(UNORM_NFC, "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB", "\xED\x95\x9C");
    CHECK_NORM(UNORM_NFC, "\xED\x95\x98\xE1\x86\xAB", "\xED\x95\x9C");            /* LV + T */
    /* U+11A7 (T_BASE) is not a trailing consonant: no composition */
    CHECK_NORM(UNORM_NFC, "\xED\x95\x98\xE1\x86\xA7", "\xED\x95\x98\xE1\x86\xA7");
    /* LVT + T does not compose; T alone stays */
    CHECK_NORM(UNORM_NFC, "\xED\x95\x9C\xE1\x86\xAB", "\xED\x95\x9C\xE1\x86\xAB");
    CHECK_NORM(UNORM_NFC, "\xE1\x86\xAB", "\xE1\x86\xAB");
    /* first and last syllables */
    CHECK_NORM(UNORM_NFD, "\xEA\xB0\x80", "\xE1\x84\x80\xE1\x85\xA1");              /* 가 */
    CHECK_NORM(UNORM_NFD, "\xED\x9E\xA3", "\xE1\x84\x92\xE1\x85\xB5\xE1\x87\x82");  /* 힣 */
    /* compatibility jamo (U+3131) -> conjoining jamo under NFK* only */
    CHECK_ALL("\xE3\x84\xB1", "\xE3\x84\xB1", "\xE3\x84\xB1", "\xE1\x84\x80", "\xE1\x84\x80");
}

static void test_combining(void) {
    CHECK_ALL("e\xCC\x81", "\xC3\xA9", "e\xCC\x81", "\xC3\xA9", "e\xCC\x81");
    CHECK_ALL("\xC3\xA9", "\xC3\xA9", "e\xCC\x81", "\xC3\xA9", "e\xCC\x81");
    /* reordering: U+0301 (230) U+0316 (220) -> U+0316 U+0301; then a + U+0301 composes */
    CHECK_NORM(UNORM_NFD, "a\xCC\x81\xCC\x96", "a\xCC\x96\xCC\x81");
    CHECK_NORM(UNORM_NFC, "a\xCC\x81\xCC\x96", "\xC3\xA1\xCC\x96");
    /* blocked: U+0305 and U+0301 are both 230 */
    CHECK_NORM(UNORM_NFC, "a\xCC\x85\xCC\x81", "a\xCC\x85\xCC\x81");
    /* ẛ̣ (U+1E9B U+0323): the UAX #15 example */
    CHECK_ALL("\xE1\xBA\x9B\xCC\xA3", "\xE1\xBA\x9B\xCC\xA3", "\xC5\xBF\xCC\xA3\xCC\x87",
              "\xE1\xB9\xA9", "s\xCC\xA3\xCC\x87");
    /* Vietnamese: ệ = e + U+0323 + U+0302 in any order of marks */
    CHECK_NORM(UNORM_NFC, "e\xCC\x82\xCC\xA3", "\xE1\xBB\x87");
    CHECK_NORM(UNORM_NFC, "e\xCC\xA3\xCC\x82", "\xE1\xBB\x87");
    CHECK_NORM(UNORM_NFD, "\xE1\xBB\x87", "e\xCC\xA3\xCC\x82");
    /* a leading non-starter stays; two starters compose (U+0B47 + U+0B3E -> U+0B4B) */
    CHECK_NORM(UNORM_NFC, "\xCC\x81" "a", "\xCC\x81" "a");
    CHECK_NORM(UNORM_NFC, "\xE0\xAD\x87\xE0\xAC\xBE", "\xE0\xAD\x8B");
    /* Greek with several marks: U+1F82 -> α U+0313 U+0300 U+0345 */
    CHECK_NORM(UNORM_NFD, "\xE1\xBE\x82", "\xCE\xB1\xCC\x93\xCC\x80\xCD\x85");
    CHECK_NORM(UNORM_NFC, "\xCE\xB1\xCD\x85\xCC\x93\xCC\x80", "\xE1\xBE\x82");
}

static void test_long_run_of_marks(void) {
    /* 3000 marks alternating 230/220: the counting-sort path must be stable */
    size_t n = 3000;
    char *in = malloc(2 * n + 2), *want = malloc(2 * n + 2);
    ZT_REQUIRE(in && want);
    in[0] = want[0] = 'x';
    for (size_t i = 0; i < n; i++) {
        in[1 + 2 * i] = '\xCC';
        in[2 + 2 * i] = i % 2 ? '\x96' : '\x81'; /* U+0316 (220) / U+0301 (230) */
    }
    for (size_t i = 0; i < n; i++) {
        want[1 + 2 * i] = '\xCC';
        want[2 + 2 * i] = i < n / 2 ? '\x96' : '\x81';
    }
    in[2 * n + 1] = want[2 * n + 1] = '\0';
    CHECK_NORM(UNORM_NFD, in, want);
    free(in);
    free(want);
}

static void test_singletons_and_exclusions(void) {
    CHECK_ALL("\xE2\x84\xAB", "\xC3\x85", "A\xCC\x8A", "\xC3\x85", "A\xCC\x8A");  /* Å U+212B */
    CHECK_ALL("\xE2\x84\xA6", "\xCE\xA9", "\xCE\xA9", "\xCE\xA9", "\xCE\xA9");     /* Ω U+2126 */
    CHECK_NORM(UNORM_NFC, "\xCD\x80", "\xCC\x80");                                 /* U+0340 */
    /* script-specific exclusion: U+0958 stays decomposed under NFC */
    CHECK_ALL("\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC", "\xE0\xA4\x95\xE0\xA4\xBC",
              "\xE0\xA4\x95\xE0\xA4\xBC", "\xE0\xA4\x95\xE0\xA4\xBC");
    CHECK_NORM(UNORM_NFC, "\xE0\xA4\x95\xE0\xA4\xBC", "\xE0\xA4\x95\xE0\xA4\xBC");
    /* post-composition version exclusion: U+2ADC -> U+2ADD U+0338 */
    CHECK_NORM(UNORM_NFC, "\xE2\xAB\x9C", "\xE2\xAB\x9D\xCC\xB8");
    /* non-starter decomposition: U+0344 -> U+0308 U+0301 */
    CHECK_NORM(UNORM_NFC, "\xCD\x84", "\xCC\x88\xCC\x81");
}

static void test_compatibility(void) {
    CHECK_ALL("\xEF\xAC\x81", "\xEF\xAC\x81", "\xEF\xAC\x81", "fi", "fi");         /* ﬁ */
    CHECK_ALL("\xE2\x91\xA0", "\xE2\x91\xA0", "\xE2\x91\xA0", "1", "1");           /* ① */
    CHECK_ALL("\xEF\xBC\xA1\xEF\xBD\x82", "\xEF\xBC\xA1\xEF\xBD\x82",
              "\xEF\xBC\xA1\xEF\xBD\x82", "Ab", "Ab");                              /* Ａｂ */
    CHECK_NORM(UNORM_NFKC, "\xC2\xA0", " ");                                        /* NBSP */
    CHECK_NORM(UNORM_NFKC, "x\xC2\xB2", "x2");
    /* U+FDFA: the longest compatibility decomposition (18 characters) */
    char *k = norm(UNORM_NFKD, "\xEF\xB7\xBA");
    ZT_REQUIRE(k != NULL);
    size_t chars = 0;
    for (const char *p = k; *p; p++) chars += ((unsigned char)*p & 0xC0) != 0x80;
    ZT_CHECK(chars == 18);
    free(k);
    /* ㈜ U+321C -> ( 110C 116E ) under NFKD, composed to ( 주 ) under NFKC */
    CHECK_NORM(UNORM_NFKC, "\xE3\x88\x9C", "(\xEC\xA3\xBC)");
}

static void test_newer_than_tables(void) {
    /* Unicode >= 10 characters are unassigned for the reference's 9.0 tables */
    CHECK_ALL("\xE3\x8B\xBF", "\xE3\x8B\xBF", "\xE3\x8B\xBF", "\xE3\x8B\xBF", "\xE3\x8B\xBF");
    CHECK_NORM(UNORM_NFD, "\xF0\x91\xA4\xB8", "\xF0\x91\xA4\xB8");                   /* U+11938 */
    CHECK_NORM(UNORM_NFC, "\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0", "\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0");
    ZT_CHECK(strcmp(unorm_unicode_version, "9.0.0") == 0);
    ZT_CHECK(unorm_ccc(0x0301) == 230 && unorm_ccc(0x0316) == 220 && unorm_ccc('a') == 0);
    ZT_CHECK(unorm_ccc(0x0D3B) == 0); /* Malayalam virama added in 10.0 (9 in Unicode 14) */
    ZT_CHECK(unorm_ccc(0x10FFFF) == 0 && unorm_ccc(0xFFFFFFFFu) == 0);
}

static void test_alignment(void) {
    zs_err_t err = {0};
    char *out = NULL;
    uint32_t *src = NULL;
    size_t n = 0;
    /* "a" U+0301 U+0316 "b" -> "á" U+0316 "b": á from byte 0; U+0316, moved before U+0301
     * by reordering, takes the second slot (byte 1); b byte 5 */
    ZT_REQUIRE(unorm_utf8(UNORM_NFC, "a\xCC\x81\xCC\x96" "b", 6, &out, &n, &src, &err) == 0);
    ZT_REQUIRE(n == 5);
    ZT_CHECK(src[0] == 0 && src[1] == 0 && src[2] == 1 && src[3] == 1 && src[4] == 5);
    free(out);
    free(src);
    /* reordering moves characters, not offsets: output stays nondecreasing from 0 */
    ZT_REQUIRE(unorm_utf8(UNORM_NFD, "\xCC\x81\xCC\x96", 4, &out, &n, &src, &err) == 0);
    ZT_REQUIRE(n == 4 && memcmp(out, "\xCC\x96\xCC\x81", 4) == 0);
    ZT_CHECK(src[0] == 0 && src[1] == 0 && src[2] == 2 && src[3] == 2);
    free(out);
    free(src);
    /* decomposition: every output byte points at the source character */
    ZT_REQUIRE(unorm_utf8(UNORM_NFKD, "x\xEF\xAC\x81", 4, &out, &n, &src, &err) == 0);
    ZT_REQUIRE(n == 3 && memcmp(out, "xfi", 3) == 0);
    ZT_CHECK(src[0] == 0 && src[1] == 1 && src[2] == 1);
    free(out);
    free(src);
    /* empty input: empty output, src may be a (non-NULL) empty array */
    ZT_REQUIRE(unorm_utf8(UNORM_NFC, "", 0, &out, &n, &src, &err) == 0);
    ZT_CHECK(n == 0 && out && out[0] == '\0');
    free(out);
    free(src);
}

static void test_invalid_input(void) {
    static const struct { const char *s; size_t n, at; } bad[] = {
        {"\xFF", 1, 0},
        {"ok \xE6\x97", 5, 3},                 /* truncated */
        {"\xED\xA0\x80", 3, 0},                /* surrogate */
        {"ab\xC0\xAF", 4, 2},                  /* overlong */
        {"\xE0\x80\xAF", 3, 0},                /* overlong, 3 bytes */
        {"\xF4\x90\x80\x80", 4, 0},            /* above U+10FFFF */
        {"\xC3" "a", 2, 0},                    /* bad continuation */
        {"e\xCC\x81\x80", 4, 3},               /* stray continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int f = 0; f < 4; f++) {
            zs_err_t err = {0};
            char *out = (char *)1;
            uint32_t *src = (uint32_t *)1;
            size_t n = 7;
            int rc = unorm_utf8((unorm_form)f, bad[i].s, bad[i].n, &out, &n, &src, &err);
            ZT_CHECK_MSG(rc == ZS_EINVAL && err.code == ZS_EINVAL, "case %zu form %d", i, f);
            ZT_CHECK(out == NULL && src == NULL && n == 0);
            char want[64];
            snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", bad[i].at);
            ZT_CHECK_STR_CONTAINS(err.msg, want);
        }
    }
    zs_err_t err = {0};
    char *out = NULL;
    size_t n = 0;
    ZT_CHECK(unorm_utf8((unorm_form)9, "a", 1, &out, &n, NULL, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "unknown normalization form");
    ZT_CHECK(out == NULL);
    unorm_form f;
    ZT_CHECK(unorm_form_parse("NFKC", &f) == 0 && f == UNORM_NFKC);
    ZT_CHECK(unorm_form_parse("nfc", &f) == -1 && unorm_form_parse("NFC ", &f) == -1);
}

/* Normalizes s[0..n); fails the test (returns NULL) on error. */
static char *normn(unorm_form f, const char *s, size_t n, size_t *out_len) {
    zs_err_t err = {0};
    char *out = NULL;
    if (unorm_utf8(f, s, n, &out, out_len, NULL, &err) != 0) {
        fprintf(stderr, "  %s: %s\n", FORM_NAME[f], err.msg);
        return NULL;
    }
    return out;
}

static int same(const char *a, size_t an, const char *b, size_t bn) {
    return a && b && an == bn && memcmp(a, b, an) == 0;
}

static size_t put_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    size_t k = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const unsigned char lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (size_t i = k - 1; i > 0; i--) {
        o[i] = (char)(0x80 | (cp & 0x3F));
        cp >>= 6;
    }
    o[0] = (char)(lead[k] | cp);
    return k;
}

/* For every code point (in chunks): the forms are idempotent and consistent:
 * X(X(s)) = X(s), NFC(NFD(s)) = NFC(s), NFD(NFC(s)) = NFD(s), NFKC(NFKD(s)) = NFKC(s),
 * NFKD(NFKC(s)) = NFKD(s), NFKC(NFC(s)) = NFKC(s), NFKD(NFD(s)) = NFKD(s). */
static void test_all_code_points(void) {
    enum { CHUNK = 8192 };
    char *buf = malloc(CHUNK * 4);
    ZT_REQUIRE(buf != NULL);
    size_t failures = 0;
    for (uint32_t start = 0; start < 0x110000 && failures < 5; start += CHUNK) {
        size_t len = 0;
        for (uint32_t cp = start; cp < start + CHUNK && cp < 0x110000; cp++) {
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            len += put_utf8(cp, buf + len);
        }
        size_t n[4], m;
        char *x[4];
        for (int f = 0; f < 4; f++) x[f] = normn((unorm_form)f, buf, len, &n[f]);
        if (!x[0] || !x[1] || !x[2] || !x[3]) {
            failures++;
            ZT_CHECK_MSG(0, "chunk at U+%04X failed to normalize", (unsigned)start);
        } else {
            static const struct { int outer, inner, want; } rules[] = {
                {0, 0, 0}, {1, 1, 1}, {2, 2, 2}, {3, 3, 3}, {0, 1, 0}, {1, 0, 1},
                {2, 3, 2}, {3, 2, 3}, {2, 0, 2}, {3, 1, 3},
            };
            for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
                int in = rules[r].inner;
                char *y = normn((unorm_form)rules[r].outer, x[in], n[in], &m);
                if (!same(y, m, x[rules[r].want], n[rules[r].want])) {
                    failures++;
                    ZT_CHECK_MSG(0, "chunk at U+%04X: %s(%s(s)) != %s(s)", (unsigned)start,
                                 FORM_NAME[rules[r].outer], FORM_NAME[rules[r].inner],
                                 FORM_NAME[rules[r].want]);
                }
                free(y);
            }
        }
        for (int f = 0; f < 4; f++) free(x[f]);
    }
    free(buf);
}

static int driver(const char *form_name) {
    unorm_form f;
    if (unorm_form_parse(form_name, &f) != 0) {
        fprintf(stderr, "unknown form %s\n", form_name);
        return 2;
    }
    size_t cap = 1 << 16, len = 0, got;
    char *in = malloc(cap);
    if (in == NULL) return 2;
    while ((got = fread(in + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = realloc(in, cap * 2);
            if (nb == NULL) { free(in); return 2; }
            in = nb;
            cap *= 2;
        }
    }
    zs_err_t err = {0};
    char *out = NULL;
    size_t n = 0;
    if (unorm_utf8(f, in, len, &out, &n, NULL, &err) != 0)
        printf("!%s %s\n", zs_status_name(err.code), err.msg);
    else
        fwrite(out, 1, n, stdout);
    free(out);
    free(in);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2) return driver(argv[1]);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [NFC|NFD|NFKC|NFKD < text]\n", argv[0]);
        return 2;
    }
    ZT_RUN(test_ascii_and_empty);
    ZT_RUN(test_hangul);
    ZT_RUN(test_combining);
    ZT_RUN(test_long_run_of_marks);
    ZT_RUN(test_singletons_and_exclusions);
    ZT_RUN(test_compatibility);
    ZT_RUN(test_newer_than_tables);
    ZT_RUN(test_alignment);
    ZT_RUN(test_invalid_input);
    ZT_RUN(test_all_code_points);
    return ZT_DONE();
}

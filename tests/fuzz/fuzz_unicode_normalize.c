/* libFuzzer target for the Unicode normalizers (src/engine/unicode_normalize.h): the input
 * is arbitrary bytes. Invalid UTF-8 must be refused with an error; valid text must give
 * valid, stable results: X(X(s)) = X(s), NFC(NFD(s)) = NFC(s), NFD(NFC(s)) = NFD(s),
 * NFKC(NFKD(s)) = NFKC(s), and alignment offsets that are nondecreasing and in range. */
#include "engine/unicode_normalize.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *norm(unorm_form f, const char *s, size_t n, size_t *len, uint32_t **src) {
    zs_err_t err = {0};
    char *out = NULL;
    if (unorm_utf8(f, s, n, &out, len, src, &err) != 0) {
        if (err.code != ZS_EINVAL || out != NULL) abort();
        return NULL;
    }
    return out;
}

static void expect(unorm_form f, const char *s, size_t n, const char *want, size_t want_len) {
    size_t len;
    char *o = norm(f, s, n, &len, NULL);
    if (o == NULL || len != want_len || memcmp(o, want, len) != 0) abort();
    free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    char *x[4] = {0};
    size_t n[4];
    for (int f = 0; f < 4; f++) {
        uint32_t *src = NULL;
        x[f] = norm((unorm_form)f, s, size, &n[f], &src);
        if (x[f] == NULL) {
            if (f > 0) abort(); /* validity does not depend on the form */
            return 0;
        }
        for (size_t i = 0; i < n[f]; i++)
            if (src[i] >= size || (i > 0 && src[i] < src[i - 1])) abort();
        if (n[f] > 0 && src[0] != 0) abort();
        free(src);
    }
    for (int f = 0; f < 4; f++) expect((unorm_form)f, x[f], n[f], x[f], n[f]);
    expect(UNORM_NFC, x[1], n[1], x[0], n[0]);
    expect(UNORM_NFD, x[0], n[0], x[1], n[1]);
    expect(UNORM_NFKC, x[3], n[3], x[2], n[2]);
    expect(UNORM_NFKD, x[2], n[2], x[3], n[3]);
    for (int f = 0; f < 4; f++) free(x[f]);
    return 0;
}

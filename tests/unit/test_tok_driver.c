/* Tokenizer driver for tests/py/test_tokenizer.py (and a self-test when run without
 * arguments, so the unit-test runner counts it).
 *
 *   test_tok_driver encode TOKENIZER_JSON [ADD_SPECIAL=1]
 *       stdin: records "<len>\n<len bytes>"; stdout: one line of space-separated ids each
 *   test_tok_driver decode TOKENIZER_JSON [SKIP_SPECIAL=1]
 *       stdin: lines of space-separated ids; stdout: one record "<len>\n<bytes>" per line
 *   test_tok_driver stream TOKENIZER_JSON [SKIP_SPECIAL=1]
 *       like decode, but through the streaming decoder: one record per id, then one for
 *       flush()
 *   test_tok_driver info TOKENIZER_JSON
 *       stdout: "vocab_size bos eos"
 * An encode/decode error is written as a line "!STATUS message" in place of the output;
 * a load error goes to stderr with exit status 2. */
#include "zerostart/tokenizer.h"
#include "zt.h"

#include <stdint.h>
#include <stdlib.h>

static const char SELF_JSON[] =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"<0xC3>\":3,\"<0xA9>\":4,"
    "\"</s>\":5},\"merges\":[\"a b\"],\"byte_fallback\":true},"
    "\"added_tokens\":[{\"id\":5,\"content\":\"</s>\",\"special\":true}],"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},"
    "{\"type\":\"Fuse\"}]}}";

static void self_test(void) {
    zs_err_t err = {0};
    zs_tok_t *tok = NULL;
    ZT_REQUIRE(zs_tok_load_from_string(SELF_JSON, sizeof SELF_JSON - 1, "self", &tok, &err) == 0);
    int32_t *ids = NULL;
    size_t n = 0;
    ZT_CHECK(zs_tok_encode(tok, "ab\xC3\xA9</s>a", 9, 1, &ids, &n, &err) == 0);
    ZT_CHECK(n == 5 && ids[0] == 2 && ids[1] == 3 && ids[2] == 4 && ids[3] == 5 && ids[4] == 0);
    zs_tok_stream_t *st = NULL;
    ZT_REQUIRE(zs_tok_stream_new(tok, 1, &st, &err) == 0);
    const char *t;
    size_t tl;
    char got[32] = {0};
    for (size_t i = 0; i < n; i++) {
        ZT_CHECK(zs_tok_stream_step(st, ids[i], &t, &tl, &err) == 0);
        ZT_CHECK(strlen(got) + tl < sizeof got);
        strncat(got, t, tl);
        if (i == 1) ZT_CHECK(tl == 0); /* half of a two-byte character */
    }
    ZT_CHECK(strcmp(got, "ab\xC3\xA9" "a") == 0);
    zs_tok_stream_free(st);
    free(ids);
    zs_tok_free(tok);
}

static int read_all(FILE *f, char **buf, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (b == NULL) return -1;
    size_t got;
    while ((got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (nb == NULL) { free(b); return -1; }
            b = nb;
            cap *= 2;
        }
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

static void put_record(const char *s, size_t n) {
    printf("%zu\n", n);
    fwrite(s, 1, n, stdout);
}

static void put_error(const zs_err_t *err) {
    printf("!%s %s\n", zs_status_name(err->code), err->msg);
}

/* Parses a line of ids; returns the count (ids malloc'd) or -1. */
static long parse_ids(char *line, int32_t **ids) {
    size_t cap = 16, n = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (v == NULL) return -1;
    char *p = line, *end;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == '\0') break;
        long long x = strtoll(p, &end, 10);
        if (end == p) { free(v); return -1; }
        p = end;
        if (n == cap) {
            int32_t *nv = realloc(v, cap * 2 * sizeof *nv);
            if (nv == NULL) { free(v); return -1; }
            v = nv;
            cap *= 2;
        }
        v[n++] = (x < INT32_MIN || x > INT32_MAX) ? -1 : (int32_t)x;
    }
    *ids = v;
    return (long)n;
}

static int run_cmd(const char *cmd, const char *path, int flag) {
    zs_err_t err = {0};
    zs_tok_t *tok = NULL;
    if (zs_tok_load(path, &tok, &err) != 0) {
        fprintf(stderr, "error: %s: %s\n", zs_status_name(err.code), err.msg);
        return 2;
    }
    if (strcmp(cmd, "info") == 0) {
        printf("%zu %d %d\n", zs_tok_vocab_size(tok), zs_tok_bos_id(tok), zs_tok_eos_id(tok));
        zs_tok_free(tok);
        return 0;
    }
    char *in;
    size_t len;
    if (read_all(stdin, &in, &len) != 0) {
        zs_tok_free(tok);
        return 2;
    }
    int rc = 0;
    if (strcmp(cmd, "encode") == 0) {
        size_t pos = 0;
        while (pos < len) {
            char *end;
            unsigned long long n = strtoull(in + pos, &end, 10);
            if (*end != '\n' || n > len - (size_t)(end + 1 - in)) { rc = 2; break; }
            pos = (size_t)(end + 1 - in);
            int32_t *ids = NULL;
            size_t k = 0;
            zs_err_clear(&err);
            if (zs_tok_encode(tok, in + pos, (size_t)n, flag, &ids, &k, &err) != 0) {
                put_error(&err);
            } else {
                for (size_t i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
                putchar('\n');
            }
            free(ids);
            pos += (size_t)n;
        }
    } else if (strcmp(cmd, "decode") == 0 || strcmp(cmd, "stream") == 0) {
        char *next = in;
        while (next < in + len) {
            char *line = next, *nl = memchr(line, '\n', (size_t)(in + len - line));
            if (nl) *nl = '\0';
            next = nl ? nl + 1 : in + len;
            int32_t *ids = NULL;
            long k = parse_ids(line, &ids);
            if (k < 0) { rc = 2; break; }
            zs_err_clear(&err);
            if (cmd[0] == 'd') {
                char *text = NULL;
                size_t tl = 0;
                if (zs_tok_decode(tok, ids, (size_t)k, flag, &text, &tl, &err) != 0) put_error(&err);
                else put_record(text, tl);
                free(text);
            } else {
                zs_tok_stream_t *st = NULL;
                if (zs_tok_stream_new(tok, flag, &st, &err) != 0) { free(ids); rc = 2; break; }
                const char *t;
                size_t tl;
                for (long i = 0; i < k; i++) {
                    zs_err_clear(&err);
                    if (zs_tok_stream_step(st, ids[i], &t, &tl, &err) != 0) put_error(&err);
                    else put_record(t, tl);
                }
                zs_err_clear(&err);
                if (zs_tok_stream_flush(st, &t, &tl, &err) != 0) put_error(&err);
                else put_record(t, tl);
                zs_tok_stream_free(st);
            }
            free(ids);
        }
    } else {
        fprintf(stderr, "unknown command %s\n", cmd);
        rc = 2;
    }
    free(in);
    zs_tok_free(tok);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 3) return run_cmd(argv[1], argv[2], argc >= 4 ? atoi(argv[3]) : 1);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [encode|decode|stream|info TOKENIZER_JSON [FLAG]]\n", argv[0]);
        return 2;
    }
    ZT_RUN(self_test);
    return ZT_DONE();
}

/* libFuzzer target for the tokenizer: loads the input as tokenizer.json and, when it loads,
 * encodes a fixed multilingual string (with special tokens and invalid UTF-8), decodes the
 * ids back (plain and streaming), and decodes a few arbitrary ids taken from the input. */
#include "zerostart/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char TEXT[] =
    "Hello, world! It's 12345 <s> </s><|endoftext|> \t\n\n  code(x) {\xE4\xB8\xAD\xE6\x96\x87"
    "\xE3\x81\x8B\xE3\x81\xAA \xF0\x9F\x98\x80 \xFF\xE6\x97 end   ";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zs_err_t err = {0};
    zs_tok_t *tok = NULL;
    if (zs_tok_load_from_string((const char *)data, size, "fuzz", &tok, &err) != 0) {
        if (tok != NULL || err.code == 0 || err.msg[0] == '\0') abort();
        return 0;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    for (int special = 0; special < 2; special++) {
        zs_err_clear(&err);
        if (zs_tok_encode(tok, TEXT, sizeof TEXT - 1, special, &ids, &n, &err) == 0) {
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || (size_t)ids[i] >= zs_tok_vocab_size(tok)) abort();
            char *text = NULL;
            size_t len = 0;
            if (zs_tok_decode(tok, ids, n, special, &text, &len, &err) == 0 && strlen(text) > len)
                abort();
            free(text);
            zs_tok_stream_t *s = NULL;
            if (zs_tok_stream_new(tok, special, &s, &err) == 0) {
                const char *t;
                size_t tl;
                for (size_t i = 0; i < n; i++) (void)zs_tok_stream_step(s, ids[i], &t, &tl, &err);
                (void)zs_tok_stream_flush(s, &t, &tl, &err);
                zs_tok_stream_free(s);
            }
        }
        free(ids);
        ids = NULL;
    }
    /* arbitrary ids (possibly invalid) from the input's first bytes */
    int32_t raw[8];
    size_t k = size / 4 < 8 ? size / 4 : 8;
    memcpy(raw, data, k * 4);
    for (size_t i = 0; i < k; i++) raw[i] = (int32_t)((uint32_t)raw[i] % (zs_tok_vocab_size(tok) + 2));
    char *text = NULL;
    zs_err_clear(&err);
    (void)zs_tok_decode(tok, raw, k, 0, &text, NULL, &err);
    free(text);
    zs_tok_free(tok);
    return 0;
}

/* zerostart tokenizer: loads a Hugging Face tokenizer.json (BPE models: byte-level BPE as in
 * GPT-2 / Llama 3 / Qwen2, SentencePiece-style BPE with byte fallback as in Llama 2 / Mistral)
 * and encodes/decodes token for token like the reference `tokenizers` package. Anything in a
 * file that is not supported is refused at load time with an error naming the field.
 * See docs/tokenizer.md.
 *
 * A loaded zs_tok_t is immutable: encode/decode may run concurrently from many threads.
 * A zs_tok_stream_t belongs to one thread at a time. */
#ifndef ZEROSTART_TOKENIZER_H
#define ZEROSTART_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_tok zs_tok_t;
typedef struct zs_tok_stream zs_tok_stream_t;

/* Loads tokenizer.json from a file. On failure *out is NULL and err says why. */
int zs_tok_load(const char *tokenizer_json_path, zs_tok_t **out, zs_err_t *err);
/* Loads from memory; `name` (may be NULL) is used in error messages. */
int zs_tok_load_from_string(const char *json, size_t len, const char *name, zs_tok_t **out,
                            zs_err_t *err);
void zs_tok_free(zs_tok_t *tok);

/* Encodes len bytes of text. Added/special tokens written in the text are recognised.
 * Invalid UTF-8 is first replaced by U+FFFD (one per maximal invalid subsequence, like
 * Python's bytes.decode(errors='replace')). add_special != 0 applies the post-processor
 * (e.g. BOS insertion). *ids is malloc'd (free() it; may be NULL when *n == 0). */
int zs_tok_encode(const zs_tok_t *tok, const char *text, size_t len, int add_special,
                  int32_t **ids, size_t *n, zs_err_t *err);

/* Decodes ids to text (malloc'd, NUL-terminated, *len excludes the NUL). skip_special != 0
 * drops special added tokens (the Python package's default). An id that is out of range or
 * has no token is an error (ZS_EINVAL) naming the id and its position. */
int zs_tok_decode(const zs_tok_t *tok, const int32_t *ids, size_t n, int skip_special,
                  char **text, size_t *len, zs_err_t *err);

/* Number of ids: max id + 1 over the model vocabulary and added tokens. */
size_t zs_tok_vocab_size(const zs_tok_t *tok);
/* Id of a token string (added tokens first, then the model vocabulary), or -1. */
int32_t zs_tok_token_to_id(const zs_tok_t *tok, const char *token, size_t len);
/* Token string of an id (not NUL-terminated in general; *len set when len != NULL),
 * or NULL when the id has no token. */
const char *zs_tok_id_to_token(const zs_tok_t *tok, int32_t id, size_t *len);
/* 1 when id is a special added token, else 0. */
int zs_tok_is_special(const zs_tok_t *tok, int32_t id);
/* BOS/EOS ids: the special tokens the post-processor puts before/after the sequence;
 * otherwise a special added token with a conventional name (<s>, <|begin_of_text|>, ...;
 * </s>, <|end_of_text|>, <|endoftext|>, ...). -1 when none. Prefer the model's
 * generation_config for stop tokens. */
int32_t zs_tok_bos_id(const zs_tok_t *tok);
int32_t zs_tok_eos_id(const zs_tok_t *tok);

/* Streaming decoder: feed ids one at a time, get back only newly completed text (whole
 * UTF-8 characters). Mirrors tokenizers' DecodeStream; flush() returns whatever is still
 * held (e.g. an incomplete character at the end, as U+FFFD). */
int zs_tok_stream_new(const zs_tok_t *tok, int skip_special, zs_tok_stream_t **out,
                      zs_err_t *err);
/* *text points into the stream's buffer, valid until the next call on the stream; *len may
 * be 0. An invalid id is an error (ZS_EINVAL) and leaves the stream unchanged. */
int zs_tok_stream_step(zs_tok_stream_t *s, int32_t id, const char **text, size_t *len,
                       zs_err_t *err);
int zs_tok_stream_flush(zs_tok_stream_t *s, const char **text, size_t *len, zs_err_t *err);
void zs_tok_stream_free(zs_tok_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif

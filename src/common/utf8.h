/* UTF-8 encoding shared by the tokenizer, the chat templates and Unicode normalization. */
#ifndef ZS_UTF8_H
#define ZS_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes code point cp (at most 0x10FFFF) as 1-4 bytes to out; returns the byte count. */
size_t zs_utf8_encode(uint32_t cp, char out[4]);

#endif

/* Stop strings over incrementally generated text: finds the first occurrence of any stop
 * string and tells how much text is safe to emit, holding back a tail that could still
 * become the start of a stop string. */
#ifndef ZS_SERVER_TEXTSTOP_H
#define ZS_SERVER_TEXTSTOP_H

#include <stddef.h>

/* Searches text[from..n) for the earliest stop string; returns its start or -1.
 * (A match cannot start before `from` when every earlier byte was released by
 * zs_stop_safe_len.) */
long zs_stop_find(const char *text, size_t n, size_t from, char *const *stop,
                  const size_t *stop_len, int nstop);
/* Bytes of text[0..n) that can be emitted: n minus the longest suffix (starting at or after
 * `from`) that is a proper prefix of some stop string. */
size_t zs_stop_safe_len(const char *text, size_t n, size_t from, char *const *stop,
                        const size_t *stop_len, int nstop);

#endif

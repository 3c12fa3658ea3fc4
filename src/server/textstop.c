/* Stop-string matching and hold-back for streamed text. */
#include "server/textstop.h"

#include <string.h>

long zs_stop_find(const char *text, size_t n, size_t from, char *const *stop,
                  const size_t *stop_len, int nstop) {
    long best = -1;
    for (int k = 0; k < nstop; k++) {
        size_t L = stop_len[k];
        if (L == 0 || L > n) continue;
        for (size_t i = from; i + L <= n; i++) {
            if (best >= 0 && (long)i >= best) break;
            if (text[i] == stop[k][0] && memcmp(text + i, stop[k], L) == 0) {
                best = (long)i;
                break;
            }
        }
    }
    return best;
}

size_t zs_stop_safe_len(const char *text, size_t n, size_t from, char *const *stop,
                        const size_t *stop_len, int nstop) {
    size_t maxl = 0;
    for (int k = 0; k < nstop; k++)
        if (stop_len[k] > maxl) maxl = stop_len[k];
    if (maxl == 0) return n;
    size_t start = n > maxl - 1 ? n - (maxl - 1) : 0;
    if (start < from) start = from;
    for (size_t q = start; q < n; q++) {
        size_t tail = n - q;
        for (int k = 0; k < nstop; k++)
            if (stop_len[k] > tail && memcmp(text + q, stop[k], tail) == 0) return q;
    }
    return n;
}

/* Bearer-token authentication with a constant-time comparison. */
#include "server/auth.h"

#include <string.h>
#include <strings.h>

int zs_auth_check(const char *key, const char *hdr) {
    if (key == NULL) return 1;
    if (hdr == NULL || strncasecmp(hdr, "Bearer ", 7) != 0) return 0;
    const char *tok = hdr + 7;
    while (*tok == ' ') tok++;
    size_t a = strlen(tok), b = strlen(key);
    /* trailing spaces are not part of the token */
    while (a > 0 && tok[a - 1] == ' ') a--;
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)(key[i] ^ (i < a ? tok[i] : 0));
    return diff == 0;
}

int zs_auth_match(char *const *keys, int n, const char *hdr) {
    if (n <= 0) return 0;
    int found = -1;
    for (int i = 0; i < n; i++)
        if (zs_auth_check(keys[i], hdr) && found < 0) found = i;
    return found;
}

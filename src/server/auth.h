/* API key check for the /v1 endpoints: "Authorization: Bearer KEY" compared in constant time,
 * against one key or a list of keys. */
#ifndef ZS_SERVER_AUTH_H
#define ZS_SERVER_AUTH_H

/* 1 when the header value authorizes the request for `key` (key NULL: always 1). */
int zs_auth_check(const char *key, const char *authorization_header);
/* The index of the key (of n) the header carries, -1 when none matches; n = 0 (no
 * authentication) gives 0. Every key is compared, so the time does not tell which matched. */
int zs_auth_match(char *const *keys, int n, const char *authorization_header);

#endif

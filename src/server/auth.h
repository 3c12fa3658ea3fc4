/* API key check for the /v1 endpoints: "Authorization: Bearer KEY" compared in constant time. */
#ifndef ZS_SERVER_AUTH_H
#define ZS_SERVER_AUTH_H

/* 1 when the header value authorizes the request for `key` (key NULL: always 1). */
int zs_auth_check(const char *key, const char *authorization_header);

#endif

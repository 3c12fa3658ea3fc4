/* Whole-file reads (see file_read.h). */
#include "common/file_read.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zs_read_file(const char *path, size_t max_bytes, char **buf, size_t *len, zs_err_t *err) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        return zs_err_set(err, zs_status_from_errno(e), "%s: %s", path, strerror(e));
    }
    size_t cap = 0, n = 0;
    char *p = NULL;
    int rc = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            if (cap > max_bytes) {
                rc = zs_err_set(err, ZS_ERANGE, "%s: larger than %zu bytes", path, max_bytes);
                break;
            }
            size_t nc = cap ? cap * 2 : 131072;
            char *np = realloc(p, nc);
            if (np == NULL) {
                rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
                break;
            }
            p = np;
            cap = nc;
        }
        size_t k = fread(p + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) {
            if (ferror(f)) rc = zs_err_set(err, ZS_EIO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc == 0 && n > max_bytes) rc = zs_err_set(err, ZS_ERANGE, "%s: larger than %zu bytes", path, max_bytes);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p[n] = '\0';
    *buf = p;
    *len = n;
    return 0;
}

/* Device names on the command line and in configs: "cpu", "cuda", "cuda:N". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "zerostart/load.h"

int zs_device_parse(const char *s, zs_device_t *out, zs_err_t *err) {
    if (strcmp(s, "cpu") == 0) {
        *out = (zs_device_t){ZS_DEV_CPU, 0};
        return ZS_OK;
    }
    if (strcmp(s, "cuda") == 0) {
        *out = (zs_device_t){ZS_DEV_CUDA, 0};
        return ZS_OK;
    }
    if (strncmp(s, "cuda:", 5) == 0 && s[5] >= '0' && s[5] <= '9') {
        char *end;
        errno = 0;
        long n = strtol(s + 5, &end, 10);
        if (errno == 0 && *end == '\0' && n >= 0 && n < 1024) {
            *out = (zs_device_t){ZS_DEV_CUDA, (int)n};
            return ZS_OK;
        }
    }
    return zs_err_set(err, ZS_EINVAL, "unknown device '%s' (expected cpu, cuda or cuda:N)", s);
}

/* Error recording for the whole library: formatting zs_err_t messages and mapping errno. */
#include "zerostart/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int zs_err_set(zs_err_t *err, int code, const char *fmt, ...) {
    if (err == NULL || err->code != ZS_OK) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void zs_err_clear(zs_err_t *err) {
    if (err == NULL) return;
    err->code = ZS_OK;
    err->msg[0] = '\0';
}

int zs_status_from_errno(int e) {
    switch (e) {
    case 0: return ZS_OK;
    case ENOENT: case ENOTDIR: return ZS_ENOENT;
    case EACCES: case EPERM: return ZS_EACCES;
    case ENOMEM: return ZS_ENOMEM;
    case EINVAL: return ZS_EINVAL;
    case ERANGE: case EOVERFLOW: case EFBIG: return ZS_ERANGE;
    case EBUSY: return ZS_EBUSY;
    default: return ZS_EIO;
    }
}

const char *zs_status_name(int code) {
    switch (code) {
    case ZS_OK: return "OK";
    case ZS_EINVAL: return "EINVAL";
    case ZS_ENOMEM: return "ENOMEM";
    case ZS_EIO: return "EIO";
    case ZS_ENOENT: return "ENOENT";
    case ZS_EACCES: return "EACCES";
    case ZS_EFORMAT: return "EFORMAT";
    case ZS_EUNSUPPORTED: return "EUNSUPPORTED";
    case ZS_ECUDA: return "ECUDA";
    case ZS_ERANGE: return "ERANGE";
    case ZS_ECANCELED: return "ECANCELED";
    case ZS_EBUSY: return "EBUSY";
    case ZS_ESTATE: return "ESTATE";
    default: return "UNKNOWN";
    }
}

/* zerostart error reporting: every library call that can fail returns a negative
 * zs_status code and fills a zs_err_t with a message that carries its context
 * (file, offset, tensor, request id). Library code never exits or prints. */
#ifndef ZEROSTART_ERR_H
#define ZEROSTART_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zs_status {
    ZS_OK = 0,
    ZS_EINVAL = -1,    /* bad argument or malformed input */
    ZS_ENOMEM = -2,    /* allocation failed */
    ZS_EIO = -3,       /* read/write failure, short read */
    ZS_ENOENT = -4,    /* file or name not found */
    ZS_EACCES = -5,    /* permission denied */
    ZS_EFORMAT = -6,   /* file contents violate the format */
    ZS_EUNSUPPORTED = -7, /* valid input this build or config cannot handle */
    ZS_ECUDA = -8,     /* CUDA runtime error */
    ZS_ERANGE = -9,    /* value out of range / overflow */
    ZS_ECANCELED = -10,
    ZS_EBUSY = -11,
    ZS_ESTATE = -12,   /* call not valid in the object's current state */
} zs_status;

typedef struct zs_err {
    int code;          /* zs_status of the first error recorded */
    char msg[1024];
} zs_err_t;

/* Records an error (first one wins if err->code is already set) and returns code.
 * err may be NULL. */
int zs_err_set(zs_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps an errno value to a zs_status. */
int zs_status_from_errno(int e);
/* Clears err. */
void zs_err_clear(zs_err_t *err);
/* Short name of a status code, e.g. "EFORMAT". */
const char *zs_status_name(int code);

#ifdef __cplusplus
}
#endif
#endif

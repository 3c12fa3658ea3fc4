/* Checking loaded weights against the checkpoint files, byte for byte. */
#ifndef ZEROSTART_VERIFY_H
#define ZEROSTART_VERIFY_H

#include <stdint.h>

#include "zerostart/load.h"
#include "zerostart/tp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Compares every tensor of w with a buffered read of its bytes from the file. The error
 * names the first tensor and byte that differ. */
int zs_weights_verify(const zs_weights_t *w, uint64_t *bytes_checked, zs_err_t *err);
/* Same for a tensor-parallel load: every rank's slice of every tensor against the file's bytes
 * (bytes_checked counts shard bytes, so replicated tensors count once per rank). */
int zs_tp_weights_verify(const zs_tp_weights_t *w, uint64_t *bytes_checked, zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif

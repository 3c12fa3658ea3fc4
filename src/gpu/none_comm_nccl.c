/* The NCCL communicator's entry point for builds without CUDA: always refused. */
#include "engine/comm.h"

int zs_comm_nccl_create(int nranks, const int *devices, zs_comm_t **out, zs_err_t *err) {
    (void)nranks;
    (void)devices;
    *out = NULL;
    return zs_err_set(err, ZS_EUNSUPPORTED, "tensor parallel on GPUs: this zerostart was built without CUDA");
}

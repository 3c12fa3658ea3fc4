/* Device memory of the served models: a budget per device (GPU, or the host for CPU
 * serving), reservations held by loading and resident models, and the start-up-aware
 * placement of each start (initial or scale-from-zero) through zs_place(): when the model
 * does not fit, idle resident models are asked to unload (their own scheduler threads do it)
 * and the start waits for the memory; when busy models hold it, the start waits until they
 * go idle. Models pre-warmed and not used yet are the first victims (even while loading).
 * Pre-warm starts only take free memory of an idle device, at once, and never while a start
 * waits for memory. Also the tier bandwidths placement uses (measured host->device per GPU
 * and the storage/page-cache read rate) from a background probe after start. Thread-safe. */
#ifndef ZS_SERVER_RESIDENCY_H
#define ZS_SERVER_RESIDENCY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "server/log.h"
#include "server/placement.h"
#include "server/scheduler.h"
#include "zerostart/load.h"
#include "zerostart/server.h"

#define ZS_RES_MAX_DEV 16

typedef struct zs_res_dev {
    zs_device_t dev;
    uint64_t budget;             /* bytes; 0 = unlimited */
    uint64_t used;               /* reserved by loading and resident models */
    double h2d_gbps;             /* measured pinned host->device; 0 = not (yet) measured */
} zs_res_dev_t;

typedef struct zs_res_model {
    const char *name;
    zs_sched_t *sched;           /* to ask it to unload (NULL until it exists) */
    uint32_t allowed;            /* device slots it may use */
    int dev;                     /* slot holding its reservation, -1 */
    int loading;                 /* reserved, engine not ready yet (not a victim) */
    uint64_t reserved;
    uint64_t footprint;          /* device bytes of weights + KV + buffers (estimated, then measured) */
    uint64_t weight_bytes;
    zs_place_tier_t tier;        /* where its weights are for the next start */
    double load_s;               /* last measured transfer seconds (eviction cost) */
} zs_res_model_t;

typedef struct zs_res {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* memory released (CLOCK_MONOTONIC) */
    int ready;
    zs_res_dev_t devs[ZS_RES_MAX_DEV];
    int ndev;
    double read_gbps;            /* storage / page-cache reads, measured; 0 = unknown */
    zs_res_model_t models[ZS_SERVER_MAX_MODELS];
    int nmodels;
    int nwaiting;                /* zs_res_acquire calls waiting for memory */
    zs_slog_t log;
    pthread_t probe;
    int probe_started;
    atomic_int stop;
    char probe_file[1024];       /* a shard to time reads on ("" = none) */
} zs_res_t;

typedef struct zs_res_decision {
    int dev;                     /* device slot */
    zs_device_t device;          /* that device */
    double wait_s;               /* placement start -> memory reserved */
    double est_s;                /* placement's estimate of the transfer */
    char text[256];              /* e.g. "cuda:0 (free)", "cpu after unloading a, b" */
} zs_res_decision_t;

int zs_res_init(zs_res_t *r, const zs_slog_t *log);
void zs_res_destroy(zs_res_t *r);
/* Adds (or finds) a device slot; budget 0 = unlimited. Returns the slot or < 0. */
int zs_res_device(zs_res_t *r, zs_device_t d, uint64_t budget);
/* Registers model idx (before its first start). */
void zs_res_model(zs_res_t *r, int idx, const char *name, uint32_t allowed, uint64_t footprint,
                  uint64_t weight_bytes, zs_place_tier_t tier);
void zs_res_set_sched(zs_res_t *r, int idx, zs_sched_t *s);
/* Reserves device memory for model idx, placing it and waiting (asking idle models to
 * unload) until it fits; gives up when *abort becomes nonzero. ZS_ENOMEM: larger than every
 * allowed device's budget. */
int zs_res_acquire(zs_res_t *r, int idx, const atomic_int *abort, zs_res_decision_t *d, zs_err_t *err);
/* Pre-warm start of model idx: reserves memory at once on an allowed idle device (see
 * zs_res_idle_devices) where it fits without unloading anything; ZS_EBUSY (with the reason)
 * otherwise. */
int zs_res_acquire_idle(zs_res_t *r, int idx, zs_res_decision_t *d, zs_err_t *err);
/* Device slots model idx may use that are idle: no model there has queued or running requests
 * or a start in progress; 0 while any start waits for memory or a model with requests waits
 * for its start. */
uint32_t zs_res_idle_devices(zs_res_t *r, int idx);
/* 1 when another model on the device holding idx's reservation has queued or running
 * requests, or a model with requests waits for its start. */
int zs_res_device_busy(zs_res_t *r, int idx);
/* Seconds a start of model idx is expected to take: its last measured transfer, else the
 * placement estimate for its tier. */
double zs_res_start_estimate(zs_res_t *r, int idx);
/* The start succeeded: the measured footprint replaces the reservation; tier and transfer
 * time are remembered for the next placement; read_gbps > 0 updates the storage rate. */
void zs_res_loaded(zs_res_t *r, int idx, uint64_t footprint, zs_place_tier_t next_tier, double load_s,
                   double read_gbps);
/* The model was unloaded or its start failed: frees its reservation. */
void zs_res_release(zs_res_t *r, int idx);
/* Where model idx is resident ("" when it is not). */
void zs_res_where(zs_res_t *r, int idx, char *buf, size_t cap);
/* Starts the bandwidth probe thread (h2d per GPU, reads of probe_file). */
void zs_res_start_probes(zs_res_t *r, const char *probe_file);
/* JSON-ready snapshot of the devices (under the lock). */
int zs_res_snapshot(zs_res_t *r, zs_res_dev_t *devs, int cap, double *read_gbps);

#endif

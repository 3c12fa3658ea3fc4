/* Start-up-aware placement: where a model that is not resident will start soonest. A pure
 * function over a snapshot of the GPUs (free memory, the idle models each holds and could
 * give up, the measured host->device bandwidth) and of the model (device footprint, where
 * its weights are and how fast that tier reads). The server calls it for every start,
 * initial or scale-from-zero; tests/unit/test_placement.c drives it with simulated
 * multi-GPU states. */
#ifndef ZS_SERVER_PLACEMENT_H
#define ZS_SERVER_PLACEMENT_H

#include <stdint.h>

#define ZS_PLACE_MAX_IDLE 16

/* Where the weights are now. */
typedef enum zs_place_tier {
    ZS_TIER_POOL_PINNED = 0,     /* hot pool, page-locked: a straight PCIe copy */
    ZS_TIER_POOL = 1,            /* hot pool, pageable (pinned on attach) */
    ZS_TIER_PAGE_CACHE = 2,      /* storage, in the page cache */
    ZS_TIER_DISK = 3,            /* storage */
} zs_place_tier_t;

typedef struct zs_place_idle {
    int model;                   /* caller's model index */
    uint64_t bytes;              /* device bytes it frees when unloaded */
    double idle_s;               /* seconds since its last request (LRU order: larger first) */
    double reload_s;             /* estimated seconds to bring it back later (eviction cost) */
} zs_place_idle_t;

typedef struct zs_place_gpu {
    int allowed;                 /* the model may run here */
    uint64_t total_bytes;        /* device budget */
    uint64_t free_bytes;         /* budget minus what resident and loading models hold */
    double h2d_gbps;             /* pinned host->device bandwidth; <= 0: unknown (default) */
    int nidle;
    zs_place_idle_t idle[ZS_PLACE_MAX_IDLE];
} zs_place_gpu_t;

typedef struct zs_place_model {
    uint64_t bytes;              /* device footprint: weights + KV + runtime buffers */
    uint64_t weight_bytes;       /* bytes to move */
    zs_place_tier_t tier;
    double read_gbps;            /* tier read bandwidth (page cache or storage); <= 0: default */
} zs_place_model_t;

enum { ZS_PLACE_WAIT = -1, ZS_PLACE_NEVER = -2 };

typedef struct zs_place_result {
    int gpu;                     /* index into gpus, ZS_PLACE_WAIT (none can take it now:
                                    busy models hold the memory) or ZS_PLACE_NEVER (larger than
                                    every allowed GPU's budget) */
    double est_s;                /* estimated seconds until the weights are resident */
    double transfer_s, evict_s;  /* its parts */
    int nevict;
    int evict[ZS_PLACE_MAX_IDLE];/* models (zs_place_idle_t.model) to unload first */
    uint64_t evict_bytes;
} zs_place_result_t;

/* Defaults used when a bandwidth is unknown (GB/s). */
#define ZS_PLACE_DEFAULT_H2D_GBPS 20.0
#define ZS_PLACE_DEFAULT_READ_GBPS 2.0
/* Fixed cost of unloading one model (free, synchronize) in seconds. */
#define ZS_PLACE_UNLOAD_S 0.01
/* Weight of a victim's future reload in the eviction cost. */
#define ZS_PLACE_RELOAD_WEIGHT 0.25

/* Seconds to move `bytes` from `tier` to a GPU with h2d_gbps. */
double zs_place_transfer_s(uint64_t bytes, zs_place_tier_t tier, double read_gbps, double h2d_gbps);

/* Picks the GPU where the model starts soonest: on each allowed GPU, if it does not fit in
 * the free memory, idle models are chosen to unload (least recently used first, then the
 * cheapest to bring back) until it fits; the estimated start is the unload cost plus the
 * transfer. Ties go to more free memory left, then the lower index. Returns r->gpu. */
int zs_place(const zs_place_gpu_t *gpus, int ngpus, const zs_place_model_t *m, zs_place_result_t *r);

const char *zs_place_tier_name(zs_place_tier_t t);

#endif

/* libFuzzer target: config.json text through zs_model_config_parse; accepted configs must
 * satisfy the engine's invariants (sizes in range, heads dividing, finite positive RoPE
 * frequencies), and the weight check runs against a lookup that serves every tensor with
 * its expected shape, then one with every tensor missing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "zerostart/model.h"

static const zs_model_config_t *g_cfg;
static const float g_dummy[1];

/* Serves any name with the shape the config implies (parsed back from the name). */
static int lookup_all(void *ctx, const char *name, zs_wref_t *out) {
    (void)ctx;
    const zs_model_config_t *c = g_cfg;
    memset(out, 0, sizeof *out);
    out->data = g_dummy;
    out->dtype = ZS_BF16;
    int64_t H = c->hidden, QD = (int64_t)c->nheads * c->head_dim,
            KD = (int64_t)c->nkv_heads * c->head_dim;
    out->ndim = 2;
    if (strstr(name, "embed_tokens") || strstr(name, "lm_head")) {
        out->shape[0] = c->vocab, out->shape[1] = H;
    } else if (strstr(name, "norm.weight") && !strstr(name, "_norm.weight")) {
        out->ndim = 1, out->shape[0] = H;
    } else if (strstr(name, "layernorm")) {
        out->ndim = 1, out->shape[0] = H;
    } else if (strstr(name, "q_norm") || strstr(name, "k_norm")) {
        if (!c->qk_norm) return 1;
        out->ndim = 1, out->shape[0] = c->head_dim;
    } else if (strstr(name, ".bias")) {
        int o = strstr(name, "o_proj") != NULL;
        if (o ? !c->bias_o : !c->bias_qkv) return 1;
        out->ndim = 1;
        out->shape[0] = o ? H : strstr(name, "q_proj") ? QD : KD;
    } else if (strstr(name, "q_proj")) {
        out->shape[0] = QD, out->shape[1] = H;
    } else if (strstr(name, "k_proj") || strstr(name, "v_proj")) {
        out->shape[0] = KD, out->shape[1] = H;
    } else if (strstr(name, "o_proj")) {
        out->shape[0] = H, out->shape[1] = QD;
    } else if (strstr(name, "down_proj")) {
        out->shape[0] = H, out->shape[1] = c->intermediate;
    } else {
        out->shape[0] = c->intermediate, out->shape[1] = H;
    }
    return 0;
}

static int lookup_none(void *ctx, const char *name, zs_wref_t *out) {
    (void)ctx, (void)name, (void)out;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static zs_model_config_t c;
    zs_err_t err = {0};
    int rc = zs_model_config_parse((const char *)data, size, &c, &err);
    if (rc != 0) {
        if (rc > 0 || err.code != rc || err.msg[0] == '\0') abort();
        return 0;
    }
    if (c.hidden < 1 || c.nheads < 1 || c.nkv_heads < 1 || c.nheads % c.nkv_heads != 0 ||
        c.head_dim < 2 || c.head_dim % 2 != 0 || c.head_dim > ZS_MODEL_MAX_HEAD_DIM ||
        c.nlayers < 1 || c.nlayers > ZS_MODEL_MAX_LAYERS || c.vocab < 1 || c.intermediate < 1 ||
        !(c.rms_eps > 0) || !(c.rope_theta > 1) || c.n_eos < 0 || c.n_eos > ZS_MODEL_MAX_EOS)
        abort();
    for (int i = 0; i < c.n_eos; i++)
        if (c.eos_ids[i] < 0 || c.eos_ids[i] >= c.vocab) abort();
    for (int32_t l = 0; l < c.nlayers; l++) {
        int32_t w = zs_model_layer_window(&c, l);
        if (w < 0 || (w > 0 && w != c.sliding_window)) abort();
    }
    static float inv[ZS_MODEL_MAX_HEAD_DIM / 2];
    float af = 0;
    zs_model_rope_inv_freq(&c, inv, &af);
    if (!isfinite(af) || !(af > 0)) abort();
    for (int i = 0; i < c.head_dim / 2; i++)
        if (!isfinite(inv[i]) || inv[i] < 0) abort();
    g_cfg = &c;
    if (c.nlayers <= 64) {
        zs_err_clear(&err);
        if (zs_model_check_weights(&c, lookup_all, NULL, &err) != 0) abort();
        zs_err_clear(&err);
        if (zs_model_check_weights(&c, lookup_none, NULL, &err) != ZS_ENOENT) abort();
    }
    return 0;
}

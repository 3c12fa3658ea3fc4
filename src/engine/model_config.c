/* Model configuration: parses and validates Hugging Face config.json for the Llama family
 * (Llama, Mistral, Qwen2, Qwen3), derives RoPE frequencies exactly as transformers' rope
 * init functions do, and checks weights against the config's shapes. */
#include "zerostart/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define CFG "config.json"

const char *zs_arch_name(zs_arch_t a) {
    switch (a) {
    case ZS_ARCH_LLAMA: return "LlamaForCausalLM";
    case ZS_ARCH_MISTRAL: return "MistralForCausalLM";
    case ZS_ARCH_QWEN2: return "Qwen2ForCausalLM";
    case ZS_ARCH_QWEN3: return "Qwen3ForCausalLM";
    }
    return "?";
}

/* --- JSON field helpers: each returns 0, or an error naming the field ------------------- */

static int is_null_or_absent(const json_t *v) { return v == NULL || json_is_null(v); }

static int get_int(const json_t *obj, const char *key, const char *prefix, bool required,
                   int64_t def, int64_t lo, int64_t hi, int64_t *out, zs_err_t *err) {
    const json_t *v = json_object_get(obj, key);
    if (is_null_or_absent(v)) {
        if (required)
            return zs_err_set(err, ZS_EFORMAT, CFG ": %s%s is missing", prefix, key);
        *out = def;
        return 0;
    }
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d == floor(d)) || !(fabs(d) < 9.0e15))
            return zs_err_set(err, ZS_EFORMAT, CFG ": %s%s must be an integer, got %g", prefix,
                              key, d);
        x = (int64_t)d;
    } else {
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s%s must be an integer", prefix, key);
    }
    if (x < lo || x > hi)
        return zs_err_set(err, ZS_ERANGE, CFG ": %s%s = %lld is out of range [%lld, %lld]",
                          prefix, key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static int get_i32(const json_t *obj, const char *key, bool required, int64_t def, int64_t lo,
                   int64_t hi, int32_t *out, zs_err_t *err) {
    int64_t x;
    int rc = get_int(obj, key, "", required, def, lo, hi, &x, err);
    if (rc) return rc;
    *out = (int32_t)x;
    return 0;
}

/* Finite number; `positive` requires > 0. */
static int get_num(const json_t *obj, const char *key, const char *prefix, bool required,
                   double def, bool positive, double *out, zs_err_t *err) {
    const json_t *v = json_object_get(obj, key);
    if (is_null_or_absent(v)) {
        if (required)
            return zs_err_set(err, ZS_EFORMAT, CFG ": %s%s is missing", prefix, key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s%s must be a number", prefix, key);
    double d = json_number_value(v);
    if (!isfinite(d) || (positive && !(d > 0)))
        return zs_err_set(err, ZS_ERANGE, CFG ": %s%s = %g must be %s", prefix, key, d,
                          positive ? "a positive finite number" : "finite");
    *out = d;
    return 0;
}

static int get_bool(const json_t *obj, const char *key, bool def, bool *out, zs_err_t *err) {
    const json_t *v = json_object_get(obj, key);
    if (is_null_or_absent(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* bos/eos: int, list of ints, or null. */
static int get_token_ids(const json_t *obj, const char *key, int32_t vocab, int32_t *ids,
                         int32_t cap, int32_t *n, zs_err_t *err) {
    const json_t *v = json_object_get(obj, key);
    *n = 0;
    if (is_null_or_absent(v)) return 0;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || x >= vocab)
            return zs_err_set(err, ZS_ERANGE, CFG ": %s = %lld is outside the vocabulary (%d)",
                              key, (long long)x, vocab);
        ids[(*n)++] = (int32_t)x;
        return 0;
    }
    if (!json_is_array(v))
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s must be an integer or a list of integers",
                          key);
    if (json_array_size(v) > (size_t)cap)
        return zs_err_set(err, ZS_EUNSUPPORTED, CFG ": %s has %zu entries (at most %d supported)",
                          key, json_array_size(v), cap);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_integer(e))
            return zs_err_set(err, ZS_EFORMAT, CFG ": %s[%zu] must be an integer", key, i);
        json_int_t x = json_integer_value(e);
        if (x < 0 || x >= vocab)
            return zs_err_set(err, ZS_ERANGE,
                              CFG ": %s[%zu] = %lld is outside the vocabulary (%d)", key, i,
                              (long long)x, vocab);
        ids[(*n)++] = (int32_t)x;
    }
    return 0;
}

/* --- RoPE -------------------------------------------------------------------------------- */

static int parse_rope(const json_t *root, zs_model_config_t *c, zs_err_t *err) {
    const json_t *rs = json_object_get(root, "rope_scaling");
    const char *rsname = "rope_scaling";
    const json_t *rp = json_object_get(root, "rope_parameters"); /* transformers v5 spelling */
    int rc;
    if (is_null_or_absent(rs) && !is_null_or_absent(rp)) {
        rs = rp;
        rsname = "rope_parameters";
    }
    double theta = 10000.0;
    if (!is_null_or_absent(rs) && json_is_object(rs) &&
        !is_null_or_absent(json_object_get(rs, "rope_theta"))) {
        char pre[32];
        snprintf(pre, sizeof pre, "%s.", rsname);
        if ((rc = get_num(rs, "rope_theta", pre, false, 10000.0, true, &theta, err))) return rc;
    } else if ((rc = get_num(root, "rope_theta", "", false, 10000.0, true, &theta, err))) {
        return rc;
    }
    c->rope_theta = theta;
    if (!(theta > 1.0))
        return zs_err_set(err, ZS_ERANGE, CFG ": rope_theta = %g must be greater than 1", theta);
    c->rope_type = ZS_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->rope_attn_factor = 1.0;
    c->rope_orig_max_pos = c->max_pos;
    if (is_null_or_absent(rs)) return 0;
    if (!json_is_object(rs))
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s must be an object or null", rsname);

    const char *tkey = "rope_type";
    const json_t *t = json_object_get(rs, "rope_type");
    if (is_null_or_absent(t)) {
        tkey = "type";
        t = json_object_get(rs, "type");
    }
    if (is_null_or_absent(t)) {
        if (rs == rp) return 0; /* rope_parameters holding only rope_theta */
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s.rope_type is missing", rsname);
    }
    if (!json_is_string(t))
        return zs_err_set(err, ZS_EFORMAT, CFG ": %s.%s must be a string", rsname, tkey);
    const char *ty = json_string_value(t);
    char pre[40];
    snprintf(pre, sizeof pre, "%s.", rsname);
    double prf = 1.0;
    if ((rc = get_num(root, "partial_rotary_factor", "", false, 1.0, true, &prf, err))) return rc;
    if ((rc = get_num(rs, "partial_rotary_factor", pre, false, prf, true, &prf, err))) return rc;
    if (prf != 1.0)
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          CFG ": partial_rotary_factor = %g is not supported (only 1)", prf);

    if (strcmp(ty, "default") == 0) return 0;
    if (strcmp(ty, "linear") == 0) {
        c->rope_type = ZS_ROPE_LINEAR;
        return get_num(rs, "factor", pre, true, 1.0, true, &c->rope_factor, err);
    }
    if (strcmp(ty, "llama3") == 0) {
        c->rope_type = ZS_ROPE_LLAMA3;
        if ((rc = get_num(rs, "factor", pre, true, 1, true, &c->rope_factor, err))) return rc;
        if ((rc = get_num(rs, "low_freq_factor", pre, true, 1, true, &c->rope_low_freq_factor,
                          err)))
            return rc;
        if ((rc = get_num(rs, "high_freq_factor", pre, true, 1, true, &c->rope_high_freq_factor,
                          err)))
            return rc;
        if ((rc = get_int(rs, "original_max_position_embeddings", pre, true, 0, 1, INT32_MAX,
                          &c->rope_orig_max_pos, err)))
            return rc;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return zs_err_set(err, ZS_ERANGE,
                              CFG ": %s.high_freq_factor (%g) must be greater than "
                                  "low_freq_factor (%g)",
                              rsname, c->rope_high_freq_factor, c->rope_low_freq_factor);
        return 0;
    }
    if (strcmp(ty, "yarn") == 0) {
        c->rope_type = ZS_ROPE_YARN;
        double factor = 0;
        const json_t *fv = json_object_get(rs, "factor");
        if ((rc = get_int(rs, "original_max_position_embeddings", pre, false, c->max_pos, 1,
                          INT32_MAX, &c->rope_orig_max_pos, err)))
            return rc;
        if (is_null_or_absent(fv)) {
            /* transformers: factor = max_position_embeddings / original_max_position_embeddings */
            factor = (double)c->max_pos / (double)c->rope_orig_max_pos;
        } else if ((rc = get_num(rs, "factor", pre, true, 1, true, &factor, err))) {
            return rc;
        }
        if (!(factor >= 1.0))
            return zs_err_set(err, ZS_ERANGE, CFG ": %s.factor = %g must be at least 1 for yarn",
                              rsname, factor);
        c->rope_factor = factor;
        double mscale = 0, mscale_all = 0, af = 0;
        if ((rc = get_num(rs, "mscale", pre, false, 0, false, &mscale, err))) return rc;
        if ((rc = get_num(rs, "mscale_all_dim", pre, false, 0, false, &mscale_all, err)))
            return rc;
        if ((rc = get_num(rs, "attention_factor", pre, false, 0, false, &af, err))) return rc;
        /* beta_fast / beta_slow: `or 32` / `or 1` in transformers, so 0 means the default */
        if ((rc = get_num(rs, "beta_fast", pre, false, 32, false, &c->rope_beta_fast, err)))
            return rc;
        if ((rc = get_num(rs, "beta_slow", pre, false, 1, false, &c->rope_beta_slow, err)))
            return rc;
        if (c->rope_beta_fast == 0) c->rope_beta_fast = 32;
        if (c->rope_beta_slow == 0) c->rope_beta_slow = 1;
        if (!(c->rope_beta_fast > 0) || !(c->rope_beta_slow > 0))
            return zs_err_set(err, ZS_ERANGE, CFG ": %s.beta_fast/beta_slow must be positive",
                              rsname);
        if ((rc = get_bool(rs, "truncate", true, &c->rope_truncate, err))) return rc;
        const json_t *afv = json_object_get(rs, "attention_factor");
        if (!is_null_or_absent(afv)) {
            if (!(af > 0))
                return zs_err_set(err, ZS_ERANGE, CFG ": %s.attention_factor must be positive",
                                  rsname);
            c->rope_attn_factor = af;
        } else {
#define YARN_MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
            if (mscale != 0 && mscale_all != 0)
                c->rope_attn_factor = YARN_MSCALE(factor, mscale) / YARN_MSCALE(factor, mscale_all);
            else
                c->rope_attn_factor = YARN_MSCALE(factor, 1.0);
#undef YARN_MSCALE
        }
        if (!isfinite(c->rope_attn_factor) || !(c->rope_attn_factor > 0))
            return zs_err_set(err, ZS_ERANGE, CFG ": %s gives a non-positive attention factor",
                              rsname);
        return 0;
    }
    return zs_err_set(err, ZS_EUNSUPPORTED, CFG ": %s.%s \"%s\" is not supported", rsname, tkey,
                      ty);
}

void zs_model_rope_inv_freq(const zs_model_config_t *c, float *inv_freq, float *attn_factor) {
    const int dim = c->head_dim, half = dim / 2;
    const double base = c->rope_theta;
    *attn_factor = 1.0f;
    for (int i = 0; i < half; i++) {
        /* transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32 */
        float expo = (float)(2 * i) / (float)dim;
        float f = (float)(1.0 / pow(base, (double)expo));
        inv_freq[i] = f;
    }
    switch (c->rope_type) {
    case ZS_ROPE_DEFAULT: break;
    case ZS_ROPE_LINEAR:
        for (int i = 0; i < half; i++) inv_freq[i] = (float)(inv_freq[i] / c->rope_factor);
        break;
    case ZS_ROPE_LLAMA3: {
        const double factor = c->rope_factor, lf = c->rope_low_freq_factor,
                     hf = c->rope_high_freq_factor, old = (double)c->rope_orig_max_pos;
        const double low_wl = old / lf, high_wl = old / hf;
        for (int i = 0; i < half; i++) {
            double f = inv_freq[i];
            double wl = 2 * M_PI / f;
            double g = wl > low_wl ? f / factor : f;
            if (!(wl < high_wl) && !(wl > low_wl)) {
                double smooth = (old / wl - lf) / (hf - lf);
                g = (1 - smooth) * g / factor + smooth * g;
            }
            inv_freq[i] = (float)g;
        }
        break;
    }
    case ZS_ROPE_YARN: {
        const double factor = c->rope_factor, omp = (double)c->rope_orig_max_pos;
#define CORR_DIM(rot) (dim * log(omp / ((rot) * 2 * M_PI)) / (2 * log(base)))
        double low = CORR_DIM(c->rope_beta_fast), high = CORR_DIM(c->rope_beta_slow);
#undef CORR_DIM
        if (c->rope_truncate) {
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            float pos_freq = (float)pow(base, (double)((float)(2 * i) / (float)dim));
            float extra = 1.0f / pos_freq;
            float inter = (float)(1.0 / (factor * pos_freq));
            float ramp = (float)(((double)i - low) / (high - low));
            if (ramp < 0) ramp = 0;
            if (ramp > 1) ramp = 1;
            float ef = 1.0f - ramp; /* extrapolation factor */
            inv_freq[i] = inter * (1.0f - ef) + extra * ef;
        }
        *attn_factor = (float)c->rope_attn_factor;
        break;
    }
    }
}

/* Extreme but finite RoPE parameters (a linear factor of 1e-300, a YaRN beta of 1e-310) give
 * infinite or NaN frequencies, which would silently turn every attention score into NaN;
 * such configs are refused here, where the frequencies are derived exactly as they are used. */
static int check_rope_frequencies(const zs_model_config_t *c, zs_err_t *err) {
    float inv[ZS_MODEL_MAX_HEAD_DIM / 2];
    float af = 0;
    zs_model_rope_inv_freq(c, inv, &af);
    if (!isfinite(af) || !(af > 0))
        return zs_err_set(err, ZS_ERANGE,
                          CFG ": rope parameters give attention factor %g (must be positive "
                              "and finite)",
                          (double)af);
    for (int i = 0; i < c->head_dim / 2; i++)
        if (!isfinite(inv[i]) || inv[i] < 0)
            return zs_err_set(err, ZS_ERANGE,
                              CFG ": rope parameters give frequency %d = %g (theta %g, factor "
                                  "%g); it must be finite and not negative",
                              i, (double)inv[i], c->rope_theta, c->rope_factor);
    return 0;
}

/* --- layers with sliding-window attention --------------------------------------------- */

static int parse_sliding(const json_t *root, zs_model_config_t *c, zs_err_t *err) {
    int rc;
    memset(c->layer_sliding, 0, sizeof c->layer_sliding);
    c->sliding_window = 0;
    const json_t *lt = json_object_get(root, "layer_types");
    const json_t *swv = json_object_get(root, "sliding_window");
    int64_t sw = 0;

    if (c->arch == ZS_ARCH_LLAMA) {
        /* LlamaAttention has no sliding window; an explicit sliding layer cannot be run. */
        if (!is_null_or_absent(lt)) {
            if (!json_is_array(lt))
                return zs_err_set(err, ZS_EFORMAT, CFG ": layer_types must be a list");
            for (size_t i = 0; i < json_array_size(lt); i++) {
                const json_t *e = json_array_get(lt, i);
                if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention") != 0)
                    return zs_err_set(err, ZS_EUNSUPPORTED,
                                      CFG ": layer_types[%zu] is not \"full_attention\" "
                                          "(unsupported for %s)",
                                      i, zs_arch_name(c->arch));
            }
        }
        return 0;
    }
    if (c->arch == ZS_ARCH_MISTRAL) {
        /* MistralConfig defaults sliding_window to 4096 when the key is absent; null disables
         * it; when set, every layer uses it. */
        if (!is_null_or_absent(lt))
            return zs_err_set(err, ZS_EUNSUPPORTED,
                              CFG ": layer_types is not supported for MistralForCausalLM");
        if (swv == NULL) {
            sw = 4096;
        } else if (!json_is_null(swv)) {
            if ((rc = get_int(root, "sliding_window", "", true, 0, 1, INT32_MAX, &sw, err)))
                return rc;
        }
        c->sliding_window = (int32_t)sw;
        if (sw > 0)
            for (int32_t l = 0; l < c->nlayers; l++) c->layer_sliding[l] = 1;
        return 0;
    }
    /* Qwen2 / Qwen3: sliding_window only counts when use_sliding_window is true; then layers
     * i >= max_window_layers slide, unless layer_types lists the kind of every layer. */
    bool use = false;
    if ((rc = get_bool(root, "use_sliding_window", false, &use, err))) return rc;
    if (!is_null_or_absent(lt)) {
        if (!json_is_array(lt) || json_array_size(lt) != (size_t)c->nlayers)
            return zs_err_set(err, ZS_EFORMAT,
                              CFG ": layer_types must be a list of num_hidden_layers (%d) "
                                  "strings",
                              c->nlayers);
        for (size_t i = 0; i < json_array_size(lt); i++) {
            const json_t *e = json_array_get(lt, i);
            const char *s = json_is_string(e) ? json_string_value(e) : "";
            if (strcmp(s, "full_attention") == 0) {
                c->layer_sliding[i] = 0;
            } else if (strcmp(s, "sliding_attention") == 0) {
                c->layer_sliding[i] = 1;
            } else {
                return zs_err_set(err, ZS_EUNSUPPORTED,
                                  CFG ": layer_types[%zu] must be \"full_attention\" or "
                                      "\"sliding_attention\"",
                                  i);
            }
        }
    }
    if (!use) {
        memset(c->layer_sliding, 0, sizeof c->layer_sliding);
        return 0;
    }
    if (swv == NULL) {
        sw = 4096; /* Qwen2Config / Qwen3Config default */
    } else if (!json_is_null(swv)) {
        if ((rc = get_int(root, "sliding_window", "", true, 0, 1, INT32_MAX, &sw, err))) return rc;
    }
    if (sw == 0) {
        memset(c->layer_sliding, 0, sizeof c->layer_sliding);
        return 0;
    }
    c->sliding_window = (int32_t)sw;
    if (is_null_or_absent(lt)) {
        int64_t mwl;
        if ((rc = get_int(root, "max_window_layers", "", false, 28, 0, INT32_MAX, &mwl, err)))
            return rc;
        for (int32_t l = 0; l < c->nlayers; l++) c->layer_sliding[l] = (l >= mwl);
    }
    return 0;
}

int32_t zs_model_layer_window(const zs_model_config_t *c, int32_t layer) {
    if (layer < 0 || layer >= c->nlayers || !c->layer_sliding[layer]) return 0;
    return c->sliding_window;
}

/* --- top level --------------------------------------------------------------------------- */

static int parse_root(const json_t *root, zs_model_config_t *c, zs_err_t *err) {
    int rc;
    if (!json_is_object(root))
        return zs_err_set(err, ZS_EFORMAT, CFG ": top level must be an object");

    const json_t *archs = json_object_get(root, "architectures");
    if (!json_is_array(archs) || json_array_size(archs) != 1 ||
        !json_is_string(json_array_get(archs, 0)))
        return zs_err_set(err, ZS_EFORMAT,
                          CFG ": architectures must be a list with exactly one name");
    const char *an = json_string_value(json_array_get(archs, 0));
    if (strcmp(an, "LlamaForCausalLM") == 0) c->arch = ZS_ARCH_LLAMA;
    else if (strcmp(an, "MistralForCausalLM") == 0) c->arch = ZS_ARCH_MISTRAL;
    else if (strcmp(an, "Qwen2ForCausalLM") == 0) c->arch = ZS_ARCH_QWEN2;
    else if (strcmp(an, "Qwen3ForCausalLM") == 0) c->arch = ZS_ARCH_QWEN3;
    else
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          CFG ": architectures[0] \"%.200s\" is not supported (Llama, Mistral, "
                              "Qwen2, Qwen3 causal LMs are)",
                          an);

    if ((rc = get_i32(root, "hidden_size", true, 0, 1, ZS_MODEL_MAX_HIDDEN, &c->hidden, err)))
        return rc;
    if ((rc = get_i32(root, "intermediate_size", true, 0, 1, ZS_MODEL_MAX_INTER,
                      &c->intermediate, err)))
        return rc;
    if ((rc = get_i32(root, "num_hidden_layers", true, 0, 1, ZS_MODEL_MAX_LAYERS, &c->nlayers,
                      err)))
        return rc;
    if ((rc = get_i32(root, "num_attention_heads", true, 0, 1, ZS_MODEL_MAX_HEADS, &c->nheads,
                      err)))
        return rc;
    if ((rc = get_i32(root, "num_key_value_heads", false, c->nheads, 1, ZS_MODEL_MAX_HEADS,
                      &c->nkv_heads, err)))
        return rc;
    if (c->nheads % c->nkv_heads != 0)
        return zs_err_set(err, ZS_EINVAL,
                          CFG ": num_key_value_heads (%d) does not divide num_attention_heads "
                              "(%d)",
                          c->nkv_heads, c->nheads);
    /* transformers: getattr(config, "head_dim", None) or hidden_size // num_attention_heads */
    const json_t *hdv = json_object_get(root, "head_dim");
    if (is_null_or_absent(hdv) || (json_is_integer(hdv) && json_integer_value(hdv) == 0)) {
        if (c->hidden % c->nheads != 0)
            return zs_err_set(err, ZS_EINVAL,
                              CFG ": num_attention_heads (%d) does not divide hidden_size (%d)",
                              c->nheads, c->hidden);
        c->head_dim = c->hidden / c->nheads;
    } else if ((rc = get_i32(root, "head_dim", true, 0, 1, ZS_MODEL_MAX_HEAD_DIM, &c->head_dim,
                             err))) {
        return rc;
    }
    if (c->head_dim % 2 != 0 || c->head_dim > ZS_MODEL_MAX_HEAD_DIM)
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          CFG ": head_dim = %d must be even and at most %d", c->head_dim,
                          ZS_MODEL_MAX_HEAD_DIM);
    if ((int64_t)c->nheads * c->head_dim > 4 * (int64_t)ZS_MODEL_MAX_HIDDEN)
        return zs_err_set(err, ZS_ERANGE,
                          CFG ": num_attention_heads * head_dim = %lld is too large",
                          (long long)c->nheads * c->head_dim);
    if ((rc = get_i32(root, "vocab_size", true, 0, 1, ZS_MODEL_MAX_VOCAB, &c->vocab, err)))
        return rc;
    if ((rc = get_int(root, "max_position_embeddings", "", false, 2048, 1, INT32_MAX, &c->max_pos,
                      err)))
        return rc;
    if ((rc = get_num(root, "rms_norm_eps", "", false, 1e-6, true, &c->rms_eps, err))) return rc;

    const json_t *act = json_object_get(root, "hidden_act");
    if (!is_null_or_absent(act) &&
        (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return zs_err_set(err, ZS_EUNSUPPORTED, CFG ": hidden_act \"%.100s\" is not supported "
                                                "(only \"silu\")",
                          json_is_string(act) ? json_string_value(act) : "?");
    bool mlp_bias = false;
    if ((rc = get_bool(root, "mlp_bias", false, &mlp_bias, err))) return rc;
    if (mlp_bias)
        return zs_err_set(err, ZS_EUNSUPPORTED, CFG ": mlp_bias = true is not supported");
    if (!is_null_or_absent(json_object_get(root, "quantization_config")))
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          CFG ": quantization_config is not supported (unquantized F32/F16/BF16 "
                              "weights only)");
    double prf = 1.0;
    if ((rc = get_num(root, "partial_rotary_factor", "", false, 1.0, true, &prf, err))) return rc;
    if (prf != 1.0)
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          CFG ": partial_rotary_factor = %g is not supported (only 1)", prf);

    if ((rc = get_bool(root, "tie_word_embeddings", false, &c->tie_embeddings, err))) return rc;
    bool ab = false;
    if ((rc = get_bool(root, "attention_bias", false, &ab, err))) return rc;
    switch (c->arch) {
    case ZS_ARCH_LLAMA: c->bias_qkv = c->bias_o = ab; break;
    case ZS_ARCH_QWEN3: c->bias_qkv = c->bias_o = ab; c->qk_norm = true; break;
    case ZS_ARCH_QWEN2: c->bias_qkv = true; c->bias_o = false; break; /* fixed in Qwen2Attention */
    case ZS_ARCH_MISTRAL: c->bias_qkv = c->bias_o = false; break;     /* fixed in MistralAttention */
    }

    if ((rc = parse_rope(root, c, err))) return rc;
    if ((rc = check_rope_frequencies(c, err))) return rc;
    if ((rc = parse_sliding(root, c, err))) return rc;

    int32_t nb = 0;
    if ((rc = get_token_ids(root, "bos_token_id", c->vocab, &c->bos_id, 1, &nb, err))) return rc;
    if (nb == 0) c->bos_id = -1;
    if ((rc = get_token_ids(root, "eos_token_id", c->vocab, c->eos_ids, ZS_MODEL_MAX_EOS,
                            &c->n_eos, err)))
        return rc;

    c->torch_dtype = -1;
    const json_t *td = json_object_get(root, "torch_dtype");
    if (is_null_or_absent(td)) td = json_object_get(root, "dtype");
    if (json_is_string(td)) {
        const char *s = json_string_value(td);
        if (strcmp(s, "bfloat16") == 0) c->torch_dtype = ZS_BF16;
        else if (strcmp(s, "float16") == 0) c->torch_dtype = ZS_F16;
        else if (strcmp(s, "float32") == 0) c->torch_dtype = ZS_F32;
    }
    return 0;
}

int zs_model_config_parse(const char *json, size_t len, zs_model_config_t *out, zs_err_t *err) {
    if (json == NULL || out == NULL)
        return zs_err_set(err, ZS_EINVAL, "zs_model_config_parse: NULL argument");
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return zs_err_set(err, ZS_EFORMAT, CFG ": invalid JSON at line %d column %d: %s", je.line,
                          je.column, je.text);
    int rc = parse_root(root, out, err);
    json_decref(root);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

/* --- weights against the config ---------------------------------------------------------- */

static const char *dtname(zs_dtype_t d) {
    static const char *names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2",
                                  "I64", "I32", "I16", "I8",   "U8",      "BOOL"};
    return (unsigned)d < sizeof names / sizeof names[0] ? names[d] : "?";
}

static int want(zs_wlookup_fn lookup, void *ctx, const char *name, int ndim, int64_t d0,
                int64_t d1, zs_err_t *err) {
    zs_wref_t w;
    memset(&w, 0, sizeof w);
    int rc = lookup(ctx, name, &w);
    if (rc < 0) return rc;
    if (rc > 0) return zs_err_set(err, ZS_ENOENT, "weights: tensor %s is missing", name);
    if (w.dtype != ZS_F32 && w.dtype != ZS_F16 && w.dtype != ZS_BF16)
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          "weights: tensor %s has dtype %s (F32, F16 or BF16 supported)", name,
                          dtname(w.dtype));
    bool ok = w.ndim == ndim && w.shape[0] == d0 && (ndim == 1 || w.shape[1] == d1);
    if (!ok) {
        char got[128] = "[";
        size_t o = 1;
        for (int i = 0; i < w.ndim && i < ZS_MAX_DIMS && o < sizeof got - 24; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", i ? ", " : "",
                                  (long long)w.shape[i]);
        snprintf(got + o, sizeof got - o, "]");
        if (ndim == 1)
            return zs_err_set(err, ZS_EFORMAT, "weights: tensor %s has shape %s, config needs [%lld]",
                              name, got, (long long)d0);
        return zs_err_set(err, ZS_EFORMAT,
                          "weights: tensor %s has shape %s, config needs [%lld, %lld]", name, got,
                          (long long)d0, (long long)d1);
    }
    if (w.data == NULL)
        return zs_err_set(err, ZS_EINVAL, "weights: tensor %s has no data", name);
    return 0;
}

static int must_not_exist(zs_wlookup_fn lookup, void *ctx, const char *name, const char *why,
                          zs_err_t *err) {
    zs_wref_t w;
    int rc = lookup(ctx, name, &w);
    if (rc < 0) return rc;
    if (rc == 0)
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          "weights: tensor %s is present but %s; refusing to ignore it", name,
                          why);
    return 0;
}

int zs_model_check_weights(const zs_model_config_t *c, zs_wlookup_fn lookup, void *ctx,
                           zs_err_t *err) {
    int rc;
    const int64_t H = c->hidden, I = c->intermediate, V = c->vocab;
    const int64_t QD = (int64_t)c->nheads * c->head_dim, KD = (int64_t)c->nkv_heads * c->head_dim;
    if ((rc = want(lookup, ctx, "model.embed_tokens.weight", 2, V, H, err))) return rc;
    if ((rc = want(lookup, ctx, "model.norm.weight", 1, H, 0, err))) return rc;
    if (!c->tie_embeddings && (rc = want(lookup, ctx, "lm_head.weight", 2, V, H, err))) return rc;
    char n[160];
    static const char *proj[4] = {"q", "k", "v", "o"};
    for (int32_t l = 0; l < c->nlayers; l++) {
#define NAME(fmt, ...) snprintf(n, sizeof n, "model.layers.%d." fmt, l, __VA_ARGS__)
        for (int p = 0; p < 4; p++) {
            int64_t rows = p == 0 ? QD : p == 3 ? H : KD, cols = p == 3 ? QD : H;
            NAME("self_attn.%s_proj.weight", proj[p]);
            if ((rc = want(lookup, ctx, n, 2, rows, cols, err))) return rc;
            bool has_bias = p == 3 ? c->bias_o : c->bias_qkv;
            NAME("self_attn.%s_proj.bias", proj[p]);
            if (has_bias) {
                if ((rc = want(lookup, ctx, n, 1, rows, 0, err))) return rc;
            } else if ((rc = must_not_exist(lookup, ctx, n, "the config has no bias there", err))) {
                return rc;
            }
        }
        for (int p = 0; p < 2; p++) {
            NAME("self_attn.%s_norm.weight", proj[p]);
            if (c->qk_norm) {
                if ((rc = want(lookup, ctx, n, 1, c->head_dim, 0, err))) return rc;
            } else if ((rc = must_not_exist(lookup, ctx, n, "the architecture has no q/k norm",
                                            err))) {
                return rc;
            }
        }
        NAME("mlp.%s_proj.weight", "gate");
        if ((rc = want(lookup, ctx, n, 2, I, H, err))) return rc;
        NAME("mlp.%s_proj.weight", "up");
        if ((rc = want(lookup, ctx, n, 2, I, H, err))) return rc;
        NAME("mlp.%s_proj.weight", "down");
        if ((rc = want(lookup, ctx, n, 2, H, I, err))) return rc;
        NAME("%s.weight", "input_layernorm");
        if ((rc = want(lookup, ctx, n, 1, H, 0, err))) return rc;
        NAME("%s.weight", "post_attention_layernorm");
        if ((rc = want(lookup, ctx, n, 1, H, 0, err))) return rc;
#undef NAME
    }
    return 0;
}

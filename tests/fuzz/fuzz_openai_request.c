/* libFuzzer target: OpenAI request bodies through zs_oai_request_parse (first byte picks
 * completions or chat). Accepted requests must satisfy the parser's guarantees (ranges,
 * n = 1, a prompt or non-empty normalized messages with string/null content, stop strings
 * non-empty and bounded); every error must render as a JSON error body with the given
 * status; accepted requests are rendered back through the response builders, and the stop
 * string helpers run over the prompt text. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/textstop.h"

static void check_json(char *s) {
    assert(s != NULL);
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    assert(j != NULL);
    json_decref(j);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    zs_oai_kind_t kind = (data[0] & 1) ? ZS_OAI_CHAT : ZS_OAI_COMPLETIONS;
    zs_oai_req_t r;
    zs_oai_error_t e;
    if (zs_oai_request_parse(kind, (const char *)data + 1, size - 1, &r, &e) != 0) {
        assert(e.status >= 400 && e.status < 600 && e.message[0]);
        size_t len = 0;
        char *b = zs_oai_error_body(&e, &len);
        assert(b && len == strlen(b));
        check_json(b);
        return 0;
    }
    assert(r.model != NULL);
    assert(r.max_tokens == -1 || r.max_tokens >= 1);
    assert(r.temperature >= 0 && r.temperature <= 2);
    assert(r.top_p > 0 && r.top_p <= 1 && r.min_p >= 0 && r.min_p <= 1 && r.top_k >= 0);
    assert(r.nstop >= 0 && r.nstop <= ZS_OAI_MAX_STOP);
    for (int i = 0; i < r.nstop; i++) assert(r.stop_len[i] > 0 && r.stop_len[i] <= ZS_OAI_MAX_STOP_LEN);
    assert(!r.include_usage || r.stream);
    if (kind == ZS_OAI_CHAT) {
        assert(json_is_array(r.messages) && json_array_size(r.messages) > 0);
        size_t i;
        json_t *m;
        json_array_foreach(r.messages, i, m) {
            json_t *c = json_object_get(m, "content");
            assert(json_is_string(json_object_get(m, "role")));
            assert(json_is_string(c) || json_is_null(c));
        }
    } else {
        assert((r.prompt != NULL) != (r.prompt_ids != NULL));
        if (r.prompt_ids) assert(r.nprompt_ids > 0);
    }
    const char *text = r.prompt ? r.prompt : r.model;
    size_t tlen = r.prompt ? r.prompt_len : strlen(r.model);
    long hit = zs_stop_find(text, tlen, 0, r.stop, r.stop_len, r.nstop);
    assert(hit >= -1 && hit < (long)tlen + 1);
    size_t safe = zs_stop_safe_len(text, tlen, 0, r.stop, r.stop_len, r.nstop);
    assert(safe <= tlen);
    zs_oai_meta_t meta = {.kind = kind, .id = "cmpl-fuzz", .created = 1, .model = "m"};
    zs_oai_usage_t u = {.prompt_tokens = 3, .completion_tokens = 4, .cached_tokens = 1, .has_kv = 1,
                        .gpu_tokens = 1, .computed_tokens = 2, .restore_s = 0.5, .restore_bytes = 7};
    check_json(zs_oai_completion_json(&meta, text, tlen, "stop", &u));
    check_json(zs_oai_chunk_json(&meta, 1, text, tlen, NULL, 1));
    check_json(zs_oai_usage_chunk_json(&meta, &u));
    zs_oai_request_free(&r);
    return 0;
}

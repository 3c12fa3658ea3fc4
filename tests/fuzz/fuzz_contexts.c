/* libFuzzer target: the two parsers of registered contexts. First byte even: a POST
 * /v1/contexts body through zs_ctx_request_parse (accepted bodies carry a model, a valid or
 * empty name, and a prompt or messages; errors render as JSON error bodies). Odd: a
 * contexts.json persistence file through zs_ctxreg_load_json (accepted files give entries
 * with valid names, non-empty token lists of non-negative ids, that list back as JSON). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/contexts.h"

static void check_json(char *s) {
    assert(s != NULL);
    json_t *j = json_loads(s, 0, NULL);
    assert(j != NULL);
    json_decref(j);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    if ((data[0] & 1) == 0) {
        zs_ctx_request_t r;
        zs_oai_error_t e;
        if (zs_ctx_request_parse(body, len, &r, &e) != 0) {
            assert(e.status >= 400 && e.status < 600 && e.message[0]);
            check_json(zs_oai_error_body(&e, NULL));
            return 0;
        }
        assert(r.oai.model != NULL);
        assert(strlen(r.name) <= ZS_CTX_NAME_MAX);
        assert(r.oai.kind == ZS_OAI_CHAT ? r.oai.messages != NULL
                                         : (r.oai.prompt != NULL || r.oai.nprompt_ids > 0));
        zs_ctx_request_free(&r);
        return 0;
    }
    zs_ctxreg_t g;
    zs_err_t err = {0};
    if (zs_ctxreg_init(&g, NULL, &err) != 0) abort();
    if (zs_ctxreg_load_json(&g, body, len, "fuzz", &err) == 0) {
        for (int i = 0; i < g.n; i++) {
            const zs_ctx_t *c = g.v[i];
            assert(c->n > 0 && c->ids != NULL && c->model && c->model[0] && c->id[0]);
            for (int32_t k = 0; k < c->n; k++) assert(c->ids[k] >= 0);
            assert(c->state == ZS_CTX_PENDING);
        }
        check_json(zs_ctxreg_list_json(&g, NULL, NULL));
        check_json(zs_ctxreg_list_json(&g, NULL, "key-ab"));
        zs_ctx_t t;
        if (zs_ctxreg_take(&g, g.n ? g.v[0]->model : "m", &t)) zs_ctx_free_copy(&t);
    } else {
        assert(err.code != 0 && err.msg[0]);
    }
    zs_ctxreg_destroy(&g);
    return 0;
}

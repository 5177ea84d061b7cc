/* SPDX-License-Identifier: Apache-2.0 */
/* model.c - names and lifetime of Langfuse's model objects. */
#include "o2l/model.h"

#include "o2l/common.h"

static const char *const type_names[O2L_OBS_TYPE_COUNT] = {
    "span",  "generation", "event",     "agent",     "tool",
    "chain", "retriever",  "embedding", "evaluator", "guardrail"};

static const char *const level_names[] = {"DEBUG", "DEFAULT", "WARNING",
                                          "ERROR"};

const char *o2l_obs_type_name(enum o2l_obs_type t)
{
    if ((unsigned)t >= O2L_OBS_TYPE_COUNT) {
        return "span";
    }
    return type_names[t];
}

const char *o2l_level_name(enum o2l_level l)
{
    if ((unsigned)l >= O2L_ARRAY_LEN(level_names)) {
        return "DEFAULT";
    }
    return level_names[l];
}

bool o2l_obs_type_is_generation_like(enum o2l_obs_type t)
{
    return t != O2L_OBS_SPAN && t != O2L_OBS_EVENT &&
           (unsigned)t < O2L_OBS_TYPE_COUNT;
}

static void observation_clear(struct o2l_observation *o)
{
    o2l_free(o->name);
    o2l_free(o->status_message);
    o2l_free(o->version);
    o2l_free(o->environment);
    o2l_free(o->model);
    o2l_free(o->prompt_name);
    cJSON_Delete(o->input);
    cJSON_Delete(o->output);
    cJSON_Delete(o->metadata);
    cJSON_Delete(o->ingest_metadata);
    cJSON_Delete(o->model_parameters);
    cJSON_Delete(o->usage_details);
    cJSON_Delete(o->cost_details);
}

static void trace_clear(struct o2l_trace *t)
{
    o2l_free(t->name);
    o2l_free(t->user_id);
    o2l_free(t->session_id);
    o2l_free(t->release);
    o2l_free(t->version);
    o2l_free(t->environment);
    cJSON_Delete(t->tags);
    cJSON_Delete(t->metadata);
    cJSON_Delete(t->ingest_metadata);
    cJSON_Delete(t->input);
    cJSON_Delete(t->output);
}

void o2l_mapped_free(struct o2l_mapped *m)
{
    if (!m) {
        return;
    }
    for (size_t i = 0; i < m->n_obs; i++) {
        observation_clear(&m->obs[i]);
    }
    for (size_t i = 0; i < m->n_traces; i++) {
        trace_clear(&m->traces[i]);
    }
    o2l_free(m->obs);
    o2l_free(m->traces);
    o2l_free(m);
}

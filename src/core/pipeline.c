/* SPDX-License-Identifier: Apache-2.0 */
/* pipeline.c - map, encode and queue one accepted export. */
#include "o2l/pipeline.h"

#include "o2l/common.h"

int o2l_pipeline_encode(const struct o2l_pipeline *p,
                        const struct o2l_export *ex, struct o2l_event_list *out)
{
    struct o2l_mapped *m = NULL;
    int rc;

    rc = o2l_map_export(ex, &p->map, &m);
    if (rc != O2L_OK) {
        goto out;
    }
    rc = o2l_encode_ingestion(m, O2L_EVENT_MAX_BYTES, out);

out:
    o2l_mapped_free(m);
    return rc;
}

bool o2l_pipeline_accepting(struct o2l_pipeline *p)
{
    return o2l_exporter_accepting(p->exporter);
}

int o2l_pipeline_submit(struct o2l_pipeline *p, const struct o2l_export *ex)
{
    struct o2l_event_list events = {0};
    int rc;

    /* Every span is at least one event: refuse before mapping. */
    if (ex->n_spans > o2l_exporter_queue_max_events(p->exporter)) {
        return O2L_ETOOBIG;
    }
    rc = o2l_pipeline_encode(p, ex, &events);
    if (rc == O2L_OK && events.len > 0) {
        rc = o2l_exporter_submit(p->exporter, &events);
    }
    o2l_event_list_clear(&events);
    return rc;
}

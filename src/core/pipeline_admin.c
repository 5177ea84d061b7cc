/* SPDX-License-Identifier: Apache-2.0 */
/* pipeline_admin.c - what the admin endpoints say about the pipeline. */
#include <stdio.h>

#include "o2l/admin.h"
#include "o2l/pipeline.h"

bool o2l_pipeline_ready(struct o2l_pipeline *p, char *reason, size_t len)
{
    struct o2l_spool_stats st;

    if (!p->spool) {
        snprintf(reason, len, "not started");
        return false;
    }
    o2l_spool_stats(p->spool, &st);
    if (st.out_of_space) {
        snprintf(reason, len,
                 "spool disk out of space (no room left in spool.dir; "
                 "%llu requests held), waiting for Langfuse to take them",
                 (unsigned long long)st.requests_held);
        return false;
    }
    if (o2l_pipeline_full(p) || !o2l_spool_has_room(p->spool, 0)) {
        snprintf(reason, len,
                 "spool full (%llu bytes held; spool.max_bytes reached), "
                 "waiting for Langfuse to take them",
                 (unsigned long long)st.bytes_held);
        return false;
    }
    return true;
}

void o2l_pipeline_write_metrics(struct o2l_pipeline *p, struct evbuffer *out)
{
    struct o2l_spool_stats sp = {0};
    struct o2l_pipeline_stats pl;
    const struct o2l_exporter_stats *ex = &pl.exporter;

    if (p->spool) {
        o2l_spool_stats(p->spool, &sp);
    }
    o2l_pipeline_stats(p, &pl);

    o2l_admin_metric(out, "requests_accepted_total", "counter",
                     "Export requests stored on disk and acknowledged.",
                     sp.requests_appended);
    o2l_admin_metric(out, "spans_accepted_total", "counter",
                     "Spans in acknowledged export requests.",
                     sp.spans_appended);
    o2l_admin_metric(out, "requests_refused_total", "counter",
                     "Export requests answered 503 or 413 because the spool "
                     "was full, out of disk space, stopping or could not "
                     "store them.",
                     pl.requests_refused);
    o2l_admin_metric(out, "spool_requests", "gauge",
                     "Export requests held in the spool.", sp.requests_held);
    o2l_admin_metric(out, "spool_bytes", "gauge",
                     "Bytes of export requests held in the spool.",
                     sp.bytes_held);
    o2l_admin_metric(out, "spool_commits_total", "counter",
                     "Spool transactions (each one fsync when spool.sync is "
                     "on).",
                     sp.commits);
    o2l_admin_metric(out, "spool_write_failures_total", "counter",
                     "Spool transactions that failed (their requests were "
                     "answered 503).",
                     sp.append_failures);
    o2l_admin_metric(out, "spool_out_of_space", "gauge",
                     "1 while the spool's disk is out of space (requests "
                     "refused until delivered ones are deleted).",
                     sp.out_of_space);
    o2l_admin_metric(out, "spool_reserve_bytes", "gauge",
                     "Size of the spool's space reserve file (0 while it is "
                     "freed for lack of space).",
                     sp.reserve_bytes);
    o2l_admin_metric(out, "spool_damaged_total", "counter",
                     "Spool files found damaged at start and moved aside "
                     "(the requests in them are lost).",
                     sp.damaged_at_open);
    o2l_admin_metric(out, "spool_recovered_requests", "gauge",
                     "Export requests found in the spool at start.",
                     sp.recovered_requests);
    o2l_admin_metric(out, "requests_delivered_total", "counter",
                     "Spooled requests whose events are all settled.",
                     pl.requests_delivered);
    o2l_admin_metric(out, "requests_unreadable_total", "counter",
                     "Spooled requests that no longer decode (kept in the "
                     "spool).",
                     pl.requests_unreadable);
    o2l_admin_metric(out, "events_queued_total", "counter",
                     "Ingestion events handed to the exporter.",
                     ex->events_queued);
    o2l_admin_metric(out, "events_delivered_total", "counter",
                     "Ingestion events accepted by Langfuse (or written to "
                     "the file sink).",
                     ex->events_delivered);
    o2l_admin_metric(out, "events_retried_total", "counter",
                     "Ingestion events sent again after a failure.",
                     ex->events_retried);
    o2l_admin_metric(out, "events_dead_lettered_total", "counter",
                     "Ingestion events written to the dead-letter file "
                     "(refused for good or expired).",
                     ex->events_rejected + ex->events_expired);
    o2l_admin_metric(out, "events_expired_total", "counter",
                     "Ingestion events dead-lettered after export.max_age_s.",
                     ex->events_expired);
    o2l_admin_metric(out, "events_dropped_total", "counter",
                     "Ingestion events lost (never expected to move).",
                     ex->events_dropped);
    o2l_admin_metric(out, "export_queue_events", "gauge",
                     "Ingestion events waiting in memory for a request.",
                     ex->queue_events);
    o2l_admin_metric(out, "export_requests_total", "counter",
                     "HTTP requests sent to Langfuse.", ex->requests_sent);
    o2l_admin_metric(out, "assemble_traces", "gauge",
                     "Traces held in the assemble stage.", pl.held_traces);
    o2l_admin_metric(out, "assemble_spans", "gauge",
                     "Spans held in the assemble stage.", pl.held_spans);
    o2l_admin_metric(out, "output_otlp", "gauge",
                     "1 while delivering to Langfuse's OTLP endpoint, 0 "
                     "for the ingestion API (or not decided yet).",
                     pl.output == O2L_OUTPUT_OTLP);
    o2l_admin_metric(out, "output_switches_total", "counter",
                     "Changes of output after the first choice.",
                     pl.output_switches);
    o2l_admin_metric(out, "spans_dropped_non_llm_total", "counter",
                     "Spans left out because they are not LLM-related "
                     "(mapping.non_llm_spans: drop).",
                     pl.spans_dropped);
    o2l_admin_metric(out, "flattened_keys_dropped_total", "counter",
                     "Flattened message keys left out over "
                     "mapping.max_flattened_slots.",
                     pl.flattened_dropped);
    o2l_admin_metric(out, "export_requests_failed_total", "counter",
                     "HTTP requests to Langfuse that failed or were not "
                     "answered 2xx.",
                     ex->requests_failed);
}

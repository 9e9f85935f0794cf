/*
 * bench_cluster_report.c — ptbench --cluster: the cluster's figures (the
 * commit over real and simulated nodes, bench_cluster.c; protection and
 * rebuild, bench_protect.c, bench_rebuild.c) measured in one run and
 * printed beside their limits, as a table or JSON.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "tests/bench/bench.h"

#define CLUSTER_COMMIT_P50_MS 5.0      /* 3 real nodes */
#define CLUSTER_CTL1000_P50_MS 50.0    /* 1,000 simulated nodes */
#define CLUSTER_CTL1000_CPU_PCT 10.0   /* with 1 s heartbeats */
#define CLUSTER_PROTECT_OVER_TCP 0.7   /* protect_gbps / protect_tcp_gbps */
#define CLUSTER_STEP_OVERHEAD 1.10     /* pt-train's step, protected / no pt */
#define CLUSTER_REBUILD_OVER_INGEST 1.5 /* rebuild_s / rebuild_ingest_s */
#define CLUSTER_REBUILD_BYTES 1.2      /* received / rebuilt */

struct cluster_results {
  char cpu[128];
  long cores;
  struct bench_cluster_result sim;
  struct bench_cluster_real real;
  struct bench_protect prot;
  bool have_sim, have_real; /* the part ran to its end (measured or said why not) */
  bool have_prot;
  char prot_why[BENCH_ERRLEN];
  int step_ms;
  double elapsed_s;
};

static const struct bench_cluster_size *cluster_size(const struct cluster_results *cr,
                                                     uint32_t nodes)
{
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++)
    if (cr->sim.sim[i].nodes == nodes)
      return &cr->sim.sim[i];
  return NULL;
}

static size_t cluster_targets(const struct cluster_results *cr, struct target *t)
{
  const struct bench_cluster_size *k = cluster_size(cr, 1000);
  bool km = cr->have_sim && k != NULL && k->measured;
  size_t n = 0;
  t[n++] = (struct target){ "commit_p50_ms", "commit across 3 nodes, p50",
                            cr->have_real && cr->real.measured ? cr->real.p50_ms : NAN, false,
                            CLUSTER_COMMIT_P50_MS, "commit_p50_ms, ms" };
  t[n++] = (struct target){ "ctl_1000_commit_p50_ms", "commit across 1000 simulated nodes, p50",
                            km ? k->p50_ms : NAN, false, CLUSTER_CTL1000_P50_MS,
                            "ctl_1000_commit_p50_ms, ms" };
  t[n++] = (struct target){ "ctl_1000_cpu_pct", "controller CPU at 1000 nodes",
                            km ? k->cpu_pct : NAN, false, CLUSTER_CTL1000_CPU_PCT,
                            "ctl_1000_cpu_pct, % of one core" };
  bool pm = cr->have_prot && cr->prot.measured;
  t[n++] = (struct target){ "protect_over_tcp", "protection across 3 nodes, 2+1",
                            pm ? cr->prot.protect_gbps / cr->prot.tcp_gbps : NAN, true,
                            CLUSTER_PROTECT_OVER_TCP, "protect_gbps / protect_tcp_gbps" };
  t[n++] = (struct target){ "cluster_step_overhead_ratio", "pt-train's step, protected / no pt",
                            pm ? cr->prot.step_ms / cr->prot.nopt_step_ms : NAN, false,
                            CLUSTER_STEP_OVERHEAD, "step ms with protection / without pt" };
  bool rb = cr->have_prot && cr->prot.rebuild_measured;
  t[n++] = (struct target){ "rebuild_over_ingest", "rebuild of a lost node",
                            rb ? cr->prot.rebuild_s / cr->prot.rebuild_ingest_s : NAN, false,
                            CLUSTER_REBUILD_OVER_INGEST, "rebuild_s / rebuild_ingest_s" };
  t[n++] = (struct target){ "rebuild_bytes_ratio", "bytes the replacement received / rebuilt",
                            rb ? (double)cr->prot.rebuild_received /
                                     (double)cr->prot.rebuild_bytes
                               : NAN,
                            false, CLUSTER_REBUILD_BYTES, "received / rebuilt bytes" };
  return n;
}

static void cluster_json(const struct cluster_results *cr, const char *error)
{
  struct bench_json j = { stdout, true };
  struct target t[8];
  size_t nt = cluster_targets(cr, t);
  const struct bench_cluster_real *rr = &cr->real;
  const struct bench_protect *pr = &cr->prot;
  bool pm = cr->have_prot && pr->measured;

  fputc('{', stdout);
  bench_json_bool(&j, "complete", error == NULL);
  if (error != NULL)
    bench_json_str(&j, "error", error);
  bench_json_str(&j, "mode", "cluster");
  bench_json_str(&j, "cpu", cr->cpu);
  bench_json_u64(&j, "cores", (uint64_t)cr->cores);
  bench_json_str(&j, "stat", "nearest-rank percentiles over the steps measured");
  bench_json_str(&j, "units", "ms = milliseconds; cpu_pct = percent of one core");
  /* false only when the controller refused JOB_START as a request it does
   * not know: then no figure below is measured, and *_why says so. */
  bench_json_bool(&j, "jobs_supported", !cr->sim.jobs_unsupported && !rr->jobs_unsupported);
  /* false when the nodes never answered JOB_ASSIGN (ptd node without
   * cluster job parts): commit_* are then not measured. */
  bench_json_bool(&j, "nodes_run_jobs", !rr->jobs_unsupported && !rr->nodes_unsupported);
  bench_json_u64(&j, "heartbeat_ms", 1000);
  bench_json_u64(&j, "ctl_step_period_ms", (uint64_t)cr->step_ms);

  bench_json_num(&j, "commit_p50_ms", cr->have_real && rr->measured ? rr->p50_ms : NAN);
  bench_json_num(&j, "commit_p99_ms", cr->have_real && rr->measured ? rr->p99_ms : NAN);
  bench_json_u64(&j, "commit_samples", (uint64_t)(cr->have_real ? rr->samples : 0));
  bench_json_u64(&j, "commit_nodes", (uint64_t)rr->nodes);
  bench_json_u64(&j, "commit_ranks_per_node", (uint64_t)rr->ranks_per_node);
  bench_json_u64(&j, "commit_state_mb", (uint64_t)rr->state_mb);
  bench_json_str(&j, "ctl_floor_measures", "ctl_N_floor_cpu_pct: a plain epoll process with no pt "
           "logic accepting the same N loopback connections, reading the same frames (sizes "
           "ctl_N_frame_bytes_*) and writing one answer to every connection once all reported, "
           "per step; on loopback a send also runs the receiver's TCP receive path in the "
           "sender's context");
  bench_json_str(&j, "commit_measures", "last node's STEP_SEALED to the last JOB_COMMIT forwarded "
           "to a node, on a relay in front of each node's controller link");
  if (cr->have_real && !rr->measured)
    bench_json_str(&j, "commit_why", rr->why);
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++) {
    const struct bench_cluster_size *z = &cr->sim.sim[i];
    bool m = cr->have_sim && z->measured;
    char k[64];
    snprintf(k, sizeof(k), "ctl_%u_commit_p50_ms", z->nodes);
    bench_json_num(&j, k, m ? z->p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_commit_p99_ms", z->nodes);
    bench_json_num(&j, k, m ? z->p99_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_cpu_pct", z->nodes);
    bench_json_num(&j, k, m ? z->cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_floor_cpu_pct", z->nodes);
    bench_json_num(&j, k, m ? z->floor_cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_cpu_over_floor", z->nodes);
    bench_json_num(&j, k, m ? z->cpu_pct / z->floor_cpu_pct : NAN);
    if (m && !isfinite(z->floor_cpu_pct)) {
      snprintf(k, sizeof(k), "ctl_%u_floor_why", z->nodes);
      bench_json_str(&j, k, z->floor_why);
    }
    snprintf(k, sizeof(k), "ctl_%u_frame_bytes_up", z->nodes);
    bench_json_u64(&j, k, m ? (uint64_t)z->up_bytes : 0);
    snprintf(k, sizeof(k), "ctl_%u_frame_bytes_heartbeat", z->nodes);
    bench_json_u64(&j, k, m ? (uint64_t)z->hb_bytes : 0);
    snprintf(k, sizeof(k), "ctl_%u_frame_bytes_down", z->nodes);
    bench_json_u64(&j, k, m ? (uint64_t)z->down_bytes : 0);
    snprintf(k, sizeof(k), "ctl_%u_idle_cpu_pct", z->nodes);
    bench_json_num(&j, k, m ? z->idle_cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_sim_cpu_pct", z->nodes);
    bench_json_num(&j, k, m ? z->sim_cpu_pct : NAN);
    snprintf(k, sizeof(k), "ctl_%u_sealed_to_pins_p50_ms", z->nodes);
    bench_json_num(&j, k, m ? z->pins_p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_votes_to_commit_p50_ms", z->nodes);
    bench_json_num(&j, k, m ? z->journal_p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_commit_spread_p50_ms", z->nodes);
    bench_json_num(&j, k, m ? z->spread_p50_ms : NAN);
    snprintf(k, sizeof(k), "ctl_%u_samples", z->nodes);
    bench_json_u64(&j, k, (uint64_t)(m ? z->samples : 0));
    snprintf(k, sizeof(k), "ctl_%u_register_s", z->nodes);
    bench_json_num(&j, k, m ? z->register_s : NAN);
    snprintf(k, sizeof(k), "ctl_%u_failed_rounds", z->nodes);
    bench_json_u64(&j, k, m ? z->failed_rounds : 0);
    if (cr->have_sim && !z->measured) {
      snprintf(k, sizeof(k), "ctl_%u_why", z->nodes);
      bench_json_str(&j, k, z->why);
    }
  }
  bench_json_num(&j, "protect_gbps", pm ? pr->protect_gbps : NAN);
  bench_json_num(&j, "protect_tcp_gbps", pm ? pr->tcp_gbps : NAN);
  bench_json_num(&j, "protect_train_gbps", pm ? pr->train_gbps : NAN);
  bench_json_u64(&j, "protect_state_mb", (uint64_t)pr->state_mb);
  bench_json_u64(&j, "protect_commits", (uint64_t)(pm ? pr->commits : 0));
  bench_json_u64(&j, "protect_steps", (uint64_t)(pm ? pr->steps : 0));
  bench_json_num(&j, "protect_window_s", pm ? pr->window_s : NAN);
  /* true when every trained step was protected: the trainers set the pace
   * and protect_gbps is a floor of protection's rate, not its capacity */
  bench_json_bool(&j, "protect_trainer_bound", pm && pr->commits + 1 >= pr->steps);
  bench_json_num(&j, "cluster_step_ms", pm ? pr->step_ms : NAN);
  bench_json_num(&j, "cluster_step_nopt_ms", pm ? pr->nopt_step_ms : NAN);
  bench_json_num(&j, "cluster_step_overhead_ratio", pm ? pr->step_ms / pr->nopt_step_ms : NAN);
  bench_json_str(&j, "protect_measures", "3 nodes x 1 rank of pt-train, code 2+1, a snapshot every "
           "step: committed (= PROTECTED on every node) steps x state bytes over the window, "
           "per node; protect_tcp_gbps: 3 processes on a loopback TCP mesh, each writing and "
           "reading state/2 bytes to and from each other (the 2+1 pattern), best of 2; "
           "protect_train_gbps: the trainers' own step rate x state bytes");
  if (!pm)
    bench_json_str(&j, "protect_why", cr->prot_why[0] ? cr->prot_why : "not run");
  bool rb = cr->have_prot && pr->rebuild_measured;
  bench_json_num(&j, "rebuild_s", rb ? pr->rebuild_s : NAN);
  bench_json_num(&j, "rebuild_ingest_s", rb ? pr->rebuild_ingest_s : NAN);
  bench_json_num(&j, "rebuild_disk_s", rb ? pr->rebuild_disk_s : NAN);
  bench_json_num(&j, "rebuild_bytes_ratio",
           rb ? (double)pr->rebuild_received / (double)pr->rebuild_bytes : NAN);
  bench_json_u64(&j, "rebuild_bytes", rb ? pr->rebuild_bytes : 0);
  bench_json_u64(&j, "rebuild_received_bytes", rb ? pr->rebuild_received : 0);
  bench_json_num(&j, "rebuild_recover_s", rb ? pr->recover_s : NAN);
  bench_json_str(&j, "rebuild_measures", "one node of the protection job lost whole (fault 'node') "
           "and its ptd started again empty: rebuild_s the SMP's rebuild of the committed "
           "step (first fetch to verified slot); rebuild_ingest_s the same bytes over one "
           "loopback TCP connection, best of 2; rebuild_disk_s the same bytes read back "
           "with O_DIRECT from --file-dir; rebuild_recover_s the loss to the rebuild's end");
  if (!rb)
    bench_json_str(&j, "rebuild_why", !cr->have_prot ? "not run"
                                : pr->rebuild_why[0] ? pr->rebuild_why : "not run");
  if (rb && !isfinite(pr->rebuild_disk_s))
    bench_json_str(&j, "rebuild_disk_why", pr->rebuild_disk_why);
  bench_json_num(&j, "elapsed_s", cr->elapsed_s);

  bench_json_targets(&j, t, nt);
  fputs("\n}\n", stdout);
}

/* A row whose figure may be missing for a reason. */
static void cluster_row(const char *label, double v, const char *unit, const char *limit,
                        const struct target *t, bool measured, const char *why, double ratio)
{
  char m[32], tg[32] = "", res[BENCH_ERRLEN + 32] = "";
  if (measured && isfinite(v))
    snprintf(m, sizeof(m), "%.2f %s", v, unit);
  else
    snprintf(m, sizeof(m), "-");
  /* A target on the ratio column (a figure beside its limit) says so. */
  bool on_ratio = t != NULL && isfinite(ratio) && t->value == ratio;
  if (t != NULL)
    snprintf(tg, sizeof(tg), "%s %g%s%s", t->at_least ? ">=" : "<=", t->bound,
             on_ratio ? "x" : " ", on_ratio ? "" : unit);
  if (!measured)
    snprintf(res, sizeof(res), "not measured: %s", why[0] ? why : "the run stopped before it");
  else if (t != NULL)
    snprintf(res, sizeof(res), "%s", bench_target_ok(t) ? "ok" : "MISS");
  bench_row(label, m, limit, ratio, tg, res);
}

static void cluster_table(const struct cluster_results *cr, const char *error)
{
  struct target t[8];
  size_t nt = cluster_targets(cr, t);
  const struct bench_cluster_real *rr = &cr->real;
  const struct bench_protect *pr = &cr->prot;
  char lab[64], lim[64];

  printf("ptbench --cluster: ptd controller on 127.0.0.1, 1 s heartbeats, a fresh controller "
         "per cluster\n");
  printf("cpu: %s, %ld cores\n", cr->cpu, cr->cores);
  printf("3 nodes: real ptd nodes, %d rank(s) each of pt-train --state-mb %d (a snapshot every "
         "step, %d ms sleep per step); latency from the last node's STEP_SEALED to the last "
         "JOB_COMMIT reaching a node's link, seen on a relay in front of each node\n",
         rr->ranks_per_node, rr->state_mb, rr->step_delay_ms);
  printf("simulated: N authenticated node connections from ptbench, 1 rank each, a step every "
         "%d ms; latency from the last STEP_SEALED sent to the last JOB_COMMIT received; CPU: "
         "the controller's utime+stime over the steps (heartbeats included), %% of one core\n\n",
         cr->step_ms);
  printf("%-30s %-15s %-26s %8s  %-9s %s\n", "figure", "measured", "limit", "ratio", "target",
         "result");
  bool rm = cr->have_real && rr->measured;
  const char *rwhy = cr->have_real ? rr->why : "";
  snprintf(lim, sizeof(lim), "%d steps", rm ? rr->samples : 0);
  cluster_row("commit, 3 nodes, p50", rr->p50_ms, "ms", lim, bench_target_find(t, nt, "commit_p50_ms"),
              rm, rwhy, NAN);
  cluster_row("commit, 3 nodes, p99", rr->p99_ms, "ms", "", NULL, rm, rwhy, NAN);
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++) {
    const struct bench_cluster_size *z = &cr->sim.sim[i];
    bool m = cr->have_sim && z->measured;
    const char *why = cr->have_sim ? z->why : "";
    bool big = z->nodes == 1000;
    snprintf(lab, sizeof(lab), "controller, %u nodes, p50", z->nodes);
    snprintf(lim, sizeof(lim), "%d steps", m ? z->samples : 0);
    cluster_row(lab, z->p50_ms, "ms", lim, big ? bench_target_find(t, nt, "ctl_1000_commit_p50_ms") : NULL,
                m, why, NAN);
    snprintf(lab, sizeof(lab), "  %u nodes, p99", z->nodes);
    cluster_row(lab, z->p99_ms, "ms", "", NULL, m, why, NAN);
    snprintf(lab, sizeof(lab), "  %u nodes, controller CPU", z->nodes);
    bool fm = m && isfinite(z->floor_cpu_pct);
    if (fm)
      snprintf(lim, sizeof(lim), "%.2f %% kernel floor", z->floor_cpu_pct);
    else
      snprintf(lim, sizeof(lim), "of one core");
    cluster_row(lab, z->cpu_pct, "%", lim, big ? bench_target_find(t, nt, "ctl_1000_cpu_pct") : NULL,
                m, why, fm ? z->cpu_pct / z->floor_cpu_pct : NAN);
    snprintf(lab, sizeof(lab), "  %u nodes, heartbeats alone", z->nodes);
    cluster_row(lab, z->idle_cpu_pct, "%", "controller, no job", NULL, m, why, NAN);
    if (m && !fm) {
      snprintf(lab, sizeof(lab), "  %u nodes, kernel floor", z->nodes);
      cluster_row(lab, NAN, "%", "", NULL, false, z->floor_why, NAN);
    }
  }
  bool pm = cr->have_prot && pr->measured;
  snprintf(lim, sizeof(lim), "%.2f GB/s raw TCP", pm ? pr->tcp_gbps : NAN);
  cluster_row("protection, 3 nodes, 2+1", pr->protect_gbps, "GB/s", lim,
              bench_target_find(t, nt, "protect_over_tcp"), pm, cr->prot_why,
              pm ? pr->protect_gbps / pr->tcp_gbps : NAN);
  if (pm && pr->commits + 1 >= pr->steps)
    printf("%-30s every trained step was protected: the trainers set the pace, and the "
           "figure is a floor of what protection moves\n", "");
  snprintf(lim, sizeof(lim), "%d of %d steps", pm ? pr->commits : 0, pm ? pr->steps : 0);
  cluster_row("  trainers' own pace", pr->train_gbps, "GB/s", lim, NULL, pm, cr->prot_why,
              NAN);
  snprintf(lim, sizeof(lim), "%.2f ms without pt", pm ? pr->nopt_step_ms : NAN);
  cluster_row("  pt-train step, protected", pr->step_ms, "ms", lim,
              bench_target_find(t, nt, "cluster_step_overhead_ratio"), pm, cr->prot_why,
              pm ? pr->step_ms / pr->nopt_step_ms : NAN);
  bool rb = cr->have_prot && pr->rebuild_measured;
  const char *rbwhy = pr->rebuild_why[0] ? pr->rebuild_why : cr->prot_why;
  snprintf(lim, sizeof(lim), "%.3f s ingest (loopback)", rb ? pr->rebuild_ingest_s : NAN);
  cluster_row("rebuild of a lost node", rb ? pr->rebuild_s : NAN, "s", lim,
              bench_target_find(t, nt, "rebuild_over_ingest"), rb, rbwhy,
              rb ? pr->rebuild_s / pr->rebuild_ingest_s : NAN);
  snprintf(lim, sizeof(lim), "%" PRIu64 " B rebuilt", rb ? pr->rebuild_bytes : 0);
  cluster_row("  bytes received", rb ? (double)pr->rebuild_received / 1e6 : NAN, "MB", lim,
              bench_target_find(t, nt, "rebuild_bytes_ratio"), rb, rbwhy,
              rb ? (double)pr->rebuild_received / (double)pr->rebuild_bytes : NAN);
  cluster_row("  disk checkpoint read", rb ? pr->rebuild_disk_s : NAN, "s", "O_DIRECT, same bytes",
              NULL, rb && isfinite(pr->rebuild_disk_s), rb ? pr->rebuild_disk_why : rbwhy, NAN);
  const struct bench_cluster_size *k = cluster_size(cr, 1000);
  printf("\nprotection: 3 nodes x 1 rank of pt-train --state-mb %d at code 2+1, a snapshot "
         "every step, over %.0f s:\n  committed (PROTECTED on every node) steps x state "
         "bytes, per node; the limit: 3 processes\n  writing and reading state/2 bytes to "
         "and from each other over loopback TCP, best of 2\n", pr->state_mb, pr->window_s);
  printf("\nkernel floor: the same N loopback TCP connections and frames (%zu B report, %zu B "
         "heartbeat in;\n  %zu B commit out, headers included) through a plain epoll process "
         "with no pt logic: one read\n  per readable connection, one write per answer, the "
         "answers once every connection reported;\n  ratio = controller / floor. On loopback "
         "the sender's send() also runs the receiver's TCP\n  receive path in its own context: "
         "each side's figure holds the other side's receive of what\n  it sent.\n",
         k != NULL ? k->up_bytes : 0, k != NULL ? k->hb_bytes : 0,
         k != NULL ? k->down_bytes : 0);
  if (cr->have_sim && k != NULL && k->measured && isfinite(k->floor_cpu_pct) &&
      k->floor_cpu_pct > CLUSTER_CTL1000_CPU_PCT)
    printf("the floor alone at 1000 nodes is %.2f %% > %g %%: ctl_1000_cpu_pct cannot meet its "
           "target at a step every %d ms on this machine\n", k->floor_cpu_pct,
           CLUSTER_CTL1000_CPU_PCT, cr->step_ms);
  int missed = 0;
  for (size_t i = 0; i < nt; i++)
    missed += isfinite(t[i].value) && !bench_target_ok(&t[i]);
  printf("\n%d target(s) missed; %s in %.1f s\n", missed,
         error ? "run INCOMPLETE" : "every part ran", cr->elapsed_s);
  if (error != NULL)
    printf("error: %s\n", error);
}

int bench_cluster_main(struct bench_opts *o, bool json)
{
  static struct cluster_results cr;
  static char err[BENCH_ERRLEN], err2[BENCH_ERRLEN];
  const char *error = NULL;
  double t_start = bench_now();

  memset(&cr, 0, sizeof(cr));
  bench_cpu_model(cr.cpu, sizeof(cr.cpu));
  cr.cores = sysconf(_SC_NPROCESSORS_ONLN);
  cr.real.p50_ms = cr.real.p99_ms = NAN;
  cr.step_ms = o->cluster_step_ms > 0 ? o->cluster_step_ms : BENCH_CLUSTER_STEP_MS;

  if (o->verbose)
    fprintf(stderr, "ptbench: the controller with simulated nodes\n");
  int rc = bench_cluster_sim_run(o, &cr.sim, err, sizeof(err));
  if (rc < 0) {
    error = err;
    fprintf(stderr, "ptbench: %s\n", err);
  } else {
    cr.have_sim = true;
  }
  if (o->verbose)
    fprintf(stderr, "ptbench: 3 real nodes running pt-train\n");
  rc = bench_cluster_real_run(o, &cr.real, err2, sizeof(err2));
  if (rc < 0) {
    fprintf(stderr, "ptbench: %s\n", err2);
    if (error == NULL)
      error = err2;
  } else {
    cr.have_real = true;
  }
  if (o->verbose)
    fprintf(stderr, "ptbench: protection across 3 real nodes at 2+1\n");
  rc = bench_protect_run(o, &cr.prot, cr.prot_why, sizeof(cr.prot_why));
  if (rc < 0) {
    fprintf(stderr, "ptbench: %s\n", cr.prot_why);
    if (error == NULL)
      error = cr.prot_why;
  } else {
    cr.have_prot = true;
  }
  bench_cleanup_run();
  cr.elapsed_s = bench_now() - t_start;
  if (json)
    cluster_json(&cr, error);
  else
    cluster_table(&cr, error);
  return error != NULL ? 1 : 0;
}

/*
 * ptctl_jobs_snapshots.c — `ptctl --controller HOST:PORT snapshots JOB
 * [--json]`: a cluster job's steps in memory and on disk, as the
 * controller knows them (JOBS_QUERY; the query is ptctl_jobs_show.c's).
 *
 *   in memory  per node (its ranks): the committed steps every one of its
 *              ranks holds verified, as the node last reported them, and
 *              the newest step they all sealed; per coding group: the
 *              newest step it protects and the node losses it absorbs now
 *   on disk    the complete steps the controller journaled (every rank's
 *              file durable: files, bytes of data, age; a step a restore
 *              found damaged says so), then the step being written (how
 *              many nodes' files are durable, or why it failed)
 */
#include <inttypes.h>
#include <stdio.h>

#include "client/ptctl.h"
#include "pt.h"

static void json(FILE *f, const char *ctl, const Pt__JobInfo *j)
{
  fputs("{\"controller\":", f);
  ptctl_out_json_str(f, ctl);
  fputs(",\"job\":", f);
  ptctl_out_json_str(f, j->name);
  fputs(",\"state\":", f);
  ptctl_out_json_str(f, j->state);
  fputs(",\"committed_step\":", f);
  ptctl_out_json_u64(f, j->has_committed_step, j->committed_step);
  fputs(",\"memory\":[", f);
  for (size_t i = 0; i < j->n_parts; i++) {
    const Pt__JobPartInfo *p = j->parts[i];
    fprintf(f, "%s{\"node\":", i > 0 ? "," : "");
    ptctl_out_json_str(f, p->node_id);
    fprintf(f, ",\"node_index\":%" PRIu32 ",\"first_rank\":%" PRIu32
               ",\"ranks\":%" PRIu32 ",\"held\":[",
            p->node_index, p->first_rank, p->ranks);
    for (size_t k = 0; k < p->n_held; k++)
      fprintf(f, "%s%" PRIu64, k > 0 ? "," : "", p->held[k]);
    fputs("],\"last_sealed\":", f);
    ptctl_out_json_u64(f, p->has_last_sealed, p->last_sealed);
    fputc('}', f);
  }
  fputs("],\"groups\":[", f);
  for (size_t g = 0; g < j->n_groups; g++) {
    const Pt__NodeGroup *ng = j->groups[g];
    fprintf(f, "%s{\"group\":%" PRIu32 ",\"protected_step\":", g > 0 ? "," : "",
            ng->index);
    ptctl_out_json_u64(f, ng->has_protected_step, ng->protected_step);
    fputs(",\"tolerates\":", f);
    ptctl_out_json_u64(f, ng->has_tolerates, ng->tolerates);
    fputc('}', f);
  }
  fputs("],\"persist_dir\":", f);
  ptctl_out_json_str(f, j->spec != NULL ? j->spec->persist_dir : NULL);
  fputs(",\"disk\":", f);
  ptctl_out_disk_json(f, j->disk, j->n_disk);
  fputs("}\n", f);
}

static void table(FILE *f, const Pt__JobInfo *j)
{
  fprintf(f, "job         %s (%s)\n", j->name, j->state);
  if (j->has_committed_step)
    fprintf(f, "committed   step %" PRIu64 "\n", j->committed_step);
  else
    fputs("committed   none yet\n", f);
  fputs("\nin memory (per node: the committed steps every one of its ranks "
        "holds, verified, as last reported)\n", f);
  fprintf(f, "%-20s %-12s %-12s %s\n", "NODE", "RANKS", "SEALED", "HELD");
  for (size_t i = 0; i < j->n_parts; i++) {
    const Pt__JobPartInfo *p = j->parts[i];
    char ranks[32], sealed[24] = "-", held[256] = "";
    size_t off = 0;
    if (p->ranks <= 1)
      snprintf(ranks, sizeof(ranks), "%" PRIu32, p->first_rank);
    else
      snprintf(ranks, sizeof(ranks), "%" PRIu32 "..%" PRIu32, p->first_rank,
               p->first_rank + p->ranks - 1);
    if (p->has_last_sealed)
      snprintf(sealed, sizeof(sealed), "%" PRIu64, p->last_sealed);
    for (size_t k = 0; k < p->n_held && off < sizeof(held) - 24; k++)
      off += (size_t)snprintf(held + off, sizeof(held) - off, "%s%" PRIu64,
                              k > 0 ? ", " : "", p->held[k]);
    /* (node ids are [A-Za-z0-9_.-]: the controller checks them) */
    fprintf(f, "%-20.20s %-12s %-12s %s\n", p->node_id, ranks, sealed,
            held[0] != '\0' ? held : "none");
  }
  for (size_t g = 0; g < j->n_groups; g++) {
    const Pt__NodeGroup *ng = j->groups[g];
    fprintf(f, "%sgroup %" PRIu32 ": ", g == 0 ? "\n" : "", ng->index);
    if (ng->has_protected_step)
      fprintf(f, "protects step %" PRIu64, ng->protected_step);
    else
      fputs("protects no step yet", f);
    if (ng->has_tolerates)
      fprintf(f, ", absorbs %" PRIu32 " more node loss%s", ng->tolerates,
              ng->tolerates == 1 ? "" : "es");
    fputc('\n', f);
  }
  bool has_dir = j->spec != NULL && j->spec->persist_dir != NULL &&
                 j->spec->persist_dir[0] != '\0';
  if (!has_dir && j->n_disk == 0) {
    fputs("\non disk: no --persist-dir\n", f);
    return;
  }
  if (has_dir) {
    fputs("\non disk under ", f);
    ptctl_out_line(f, j->spec->persist_dir);
  } else {
    fputs("\non disk (no --persist-dir: an earlier run's steps)", f);
  }
  fputs(" (complete: journaled by the controller)\n", f);
  if (j->n_disk == 0) {
    fputs("no step yet\n", f);
    return;
  }
  ptctl_out_disk_table(f, j->disk, j->n_disk);
}

void ptctl_jobs_snapshots_print(FILE *f, const struct ptctl_opts *o,
                                const Pt__JobInfo *j)
{
  if (o->json)
    json(f, o->controller, j);
  else
    table(f, j);
}

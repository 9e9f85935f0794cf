/*
 * smp.c — ptd smp: the snapshot management process of one rank.
 *
 * It owns the rank's shm object (snapshot/snap_store.h) and is the only
 * process that changes slot states. It serves, on one Unix socket, its
 * trainer (libpt: HELLO, SLOT_ACQUIRE, SEAL, RESTORE_QUERY, BYE) and its node
 * (SUBSCRIBE, STATE_QUERY, PROTECT, COMMIT, ABORT, SET_RESTORE); the
 * messages are those of rpc/pt.proto and the exchange is the one of the
 * project's protocol notes.
 * This file starts, listens and stops; smp_serve.c answers the requests.
 *
 * Invariants kept here:
 *   - One trainer at a time: the connection whose HELLO was accepted is the
 *     trainer until it says BYE or closes; another HELLO meanwhile gets -EBUSY.
 *   - Every slot a connection acquired and has not sealed is remembered with
 *     that connection; when the connection goes, those slots are aborted, so
 *     a dead trainer never leaves a slot WRITING.
 *   - The object outlives this process. At start-up an existing object is
 *     re-opened and recovered (WRITING slots freed); a damaged or foreign one
 *     is renamed aside and the next HELLO creates a fresh one.
 *   - The SMP never touches a GPU and never blocks on a peer: every request is
 *     answered from memory (STATE_QUERY{verify} reads the slots, which is the
 *     point of asking for it).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "daemon/conf.h"
#include "daemon/log.h"
#include "daemon/roles.h"
#include "daemon/smp_internal.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"

/* ---- start-up: the existing object ---- */

static int store_load(struct smp *smp)
{
  char err[256] = "", aside[300] = "";
  int rc;

  rc = snap_store_open(&smp->store, smp->shm_name, err, sizeof(err));
  if (rc == -ENOENT)
    return 0;
  if (rc == 0 && (strcmp(snap_store_job(smp->store), smp->job) != 0 ||
                  snap_store_rank(smp->store) != smp->rank)) {
    snprintf(err, sizeof(err), "it belongs to job '%s' rank %u",
             snap_store_job(smp->store), snap_store_rank(smp->store));
    snap_store_close(smp->store);
    smp->store = NULL;
    rc = PT_EFORMAT;
  }
  if (rc == PT_EFORMAT || rc == PT_EVERSION) {
    int qrc = snap_store_quarantine(smp->shm_name, aside, sizeof(aside));
    if (qrc != 0) {
      log_error("cannot set damaged object '%s' aside: %s", smp->shm_name,
                pt_strerror(qrc));
      return qrc;
    }
    log_error("snapshot object '%s' is unusable (%s): renamed to '%s'; "
              "starting with no snapshot", smp->shm_name,
              err[0] ? err : pt_strerror(rc), aside);
    return 0;
  }
  if (rc != 0) {
    log_error("cannot open snapshot object '%s': %s", smp->shm_name,
              err[0] ? err : pt_strerror(rc));
    return rc;
  }
  rc = snap_store_recover(smp->store);
  if (rc > 0)
    log_notice("'%s': freed %d slot(s) left WRITING by a crash",
               smp->shm_name, rc);
  else if (rc < 0)
    log_warn("'%s': recovery failed: %s", smp->shm_name, pt_strerror(rc));
  log_info("re-opened snapshot object '%s' (%" PRIu64 " bytes, %u slots)",
           smp->shm_name, snap_store_total_bytes(smp->store),
           snap_store_nslots(smp->store));
  return 0;
}
/* ---- connections ---- */

static void on_close(struct rpc_conn *c, int err)
{
  struct smp_conn *sc = rpc_conn_data(c);
  struct smp *smp;

  if (sc == NULL)
    return;
  smp = sc->smp;
  if (err != 0 && err != -ECONNRESET && err != -EPIPE)
    log_debug("connection closed: %s", pt_strerror(err));
  smp_conn_gone(sc);
  if (sc->prev != NULL)
    sc->prev->next = sc->next;
  else
    smp->conns = sc->next;
  if (sc->next != NULL)
    sc->next->prev = sc->prev;
  rpc_conn_set_data(c, NULL);
  free(sc);
}

static int on_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  struct smp *smp = rpc_listener_data(l);
  struct smp_conn *sc;

  if (smp->stopping)
    return -ESHUTDOWN;
  sc = calloc(1, sizeof(*sc));
  if (sc == NULL)
    return -ENOMEM;
  sc->smp = smp;
  sc->conn = c;
  sc->next = smp->conns;
  if (smp->conns != NULL)
    smp->conns->prev = sc;
  smp->conns = sc;
  rpc_conn_set_data(c, sc);
  return 0;
}

/* ---- stopping ---- */

static void smp_stop(struct smp *smp)
{
  struct smp_conn *sc, *next;

  if (smp->stopping)
    return;
  smp->stopping = true;
  if (smp->listener != NULL)
    rpc_listener_close(smp->listener);
  smp->listener = NULL;
  for (sc = smp->conns; sc != NULL; sc = next) {
    next = sc->next;
    rpc_conn_close(sc->conn, 0);
  }
  uv_signal_stop(&smp->sig_term);
  uv_signal_stop(&smp->sig_int);
  if (!uv_is_closing((uv_handle_t *)&smp->sig_term))
    uv_close((uv_handle_t *)&smp->sig_term, NULL);
  if (!uv_is_closing((uv_handle_t *)&smp->sig_int))
    uv_close((uv_handle_t *)&smp->sig_int, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
  struct smp *smp = h->data;

  log_info("stopping on %s", strsignal(signum));
  smp_stop(smp);
}

/* ---- command line ---- */

static int uint_parse(const char *s, uint32_t max, uint32_t *out)
{
  char *end;
  unsigned long v;

  if (s == NULL || *s < '0' || *s > '9')
    return -EINVAL;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    return -EINVAL;
  *out = (uint32_t)v;
  return 0;
}

static void usage(FILE *f)
{
  fprintf(f,
    "usage: ptd smp --job J --rank R --socket PATH [options]\n"
    "\n"
    "Snapshot management process of one rank: owns the rank's shared-memory\n"
    "snapshot object and serves its trainer and its node on a Unix socket.\n"
    "\n"
    "  --job J           job name (required)\n"
    "  --rank R          rank served (required)\n"
    "  --world W         ranks in the job (default 1)\n"
    "  --socket PATH     Unix socket to listen on (required)\n"
    "  --slots N         snapshot slots, 2..%d (default 2)\n"
    "  --budget BYTES    most bytes the object may take (\"4G\", \"512M\";\n"
    "                    default: no budget)\n"
    "  --shm-prefix P    prefix of the shm object's name (default none)\n"
    "  --autocommit      commit every sealed step at once (no node)\n"
    "  --instance HEX    the job instance id (32 hex digits): an object made\n"
    "                    by another instance is refused (default: all zero)\n"
    "  --secret-file F   the node's secret (a file of mode 0600): only a\n"
    "                    SUBSCRIBE carrying it is the node (default: none)\n"
    "  --huge-pages      make the object with huge pages where /dev/shm\n"
    "                    allows it (mounted with huge=within_size or\n"
    "                    huge=advise); else 4 KiB pages and one warning\n"
    "  --log-level N     3 errors .. 7 debug (default 6)\n"
    "  --help            this text\n", SNAP_MAX_SLOTS);
}

enum { OPT_JOB = 256, OPT_RANK, OPT_WORLD, OPT_SOCKET, OPT_SLOTS, OPT_BUDGET,
       OPT_PREFIX, OPT_AUTOCOMMIT, OPT_LOGLEVEL, OPT_INSTANCE, OPT_SECRET,
       OPT_HUGE, OPT_HELP };

/* 32 hex digits into SNAP_INSTANCE_BYTES bytes. */
static int instance_parse(const char *s, uint8_t *out)
{
  if (strlen(s) != 2 * SNAP_INSTANCE_BYTES)
    return -EINVAL;
  for (int i = 0; i < SNAP_INSTANCE_BYTES; i++) {
    unsigned v = 0;
    for (int j = 0; j < 2; j++) {
      char ch = s[2 * i + j];
      v <<= 4;
      if (ch >= '0' && ch <= '9')
        v |= (unsigned)(ch - '0');
      else if (ch >= 'a' && ch <= 'f')
        v |= (unsigned)(ch - 'a' + 10);
      else if (ch >= 'A' && ch <= 'F')
        v |= (unsigned)(ch - 'A' + 10);
      else
        return -EINVAL;
    }
    out[i] = (uint8_t)v;
  }
  return 0;
}

static int args_parse(struct smp *smp, int argc, char **argv)
{
  static const struct option opts[] = {
    { "job", required_argument, NULL, OPT_JOB },
    { "rank", required_argument, NULL, OPT_RANK },
    { "world", required_argument, NULL, OPT_WORLD },
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "slots", required_argument, NULL, OPT_SLOTS },
    { "budget", required_argument, NULL, OPT_BUDGET },
    { "shm-prefix", required_argument, NULL, OPT_PREFIX },
    { "autocommit", no_argument, NULL, OPT_AUTOCOMMIT },
    { "log-level", required_argument, NULL, OPT_LOGLEVEL },
    { "instance", required_argument, NULL, OPT_INSTANCE },
    { "secret-file", required_argument, NULL, OPT_SECRET },
    { "huge-pages", no_argument, NULL, OPT_HUGE },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
  };
  bool has_rank = false;
  uint32_t v;
  int o, li = 0;

  smp->world = 1;
  smp->nslots = 2;
  smp->prefix = "";
  optind = 0; /* full re-initialisation: the role may run more than once */
  opterr = 0;
  while ((o = getopt_long(argc, argv, "", opts, &li)) != -1) {
    switch (o) {
    case OPT_JOB:
      smp->job = optarg;
      break;
    case OPT_RANK:
      if (uint_parse(optarg, INT32_MAX, &smp->rank) != 0)
        goto bad_value;
      has_rank = true;
      break;
    case OPT_WORLD:
      if (uint_parse(optarg, INT32_MAX, &smp->world) != 0 || smp->world == 0)
        goto bad_value;
      break;
    case OPT_SOCKET:
      smp->socket_path = optarg;
      break;
    case OPT_SLOTS:
      if (uint_parse(optarg, SNAP_MAX_SLOTS, &smp->nslots) != 0 ||
          smp->nslots < 2)
        goto bad_value;
      break;
    case OPT_BUDGET:
      if (conf_parse_bytes(optarg, &smp->budget) != 0)
        goto bad_value;
      break;
    case OPT_PREFIX:
      smp->prefix = optarg;
      break;
    case OPT_AUTOCOMMIT:
      smp->autocommit = true;
      break;
    case OPT_LOGLEVEL:
      if (uint_parse(optarg, 7, &v) != 0)
        goto bad_value;
      log_max_level = (int)v;
      break;
    case OPT_INSTANCE:
      if (instance_parse(optarg, smp->instance) != 0)
        goto bad_value;
      break;
    case OPT_SECRET:
      smp->secret_file = optarg;
      break;
    case OPT_HUGE:
      smp->huge_pages = true;
      break;
    case OPT_HELP:
      usage(stdout);
      return 1;
    default:
      fprintf(stderr, "ptd smp: unknown or incomplete option '%s'\n",
              argv[optind - 1]);
      usage(stderr);
      return -EINVAL;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ptd smp: unexpected argument '%s'\n", argv[optind]);
    return -EINVAL;
  }
  if (smp->job == NULL || smp->job[0] == '\0' || !has_rank ||
      smp->socket_path == NULL || smp->socket_path[0] == '\0') {
    fprintf(stderr, "ptd smp: --job, --rank and --socket are required\n");
    usage(stderr);
    return -EINVAL;
  }
  if (smp->rank >= smp->world) {
    fprintf(stderr, "ptd smp: rank %u is not below world size %u\n", smp->rank,
            smp->world);
    return -EINVAL;
  }
  return 0;

bad_value:
  fprintf(stderr, "ptd smp: invalid value '%s' for --%s\n", optarg,
          opts[li].name);
  return -EINVAL;
}

/* ---- main ---- */

static void close_walk_cb(uv_handle_t *h, void *arg)
{
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int smp_main(int argc, char **argv)
{
  static struct smp smp_storage;
  struct smp *smp = &smp_storage;
  struct rpc_conn_ops ops = { .on_msg = smp_on_msg, .on_close = on_close };
  char role[48];
  int rc, status = 1;

  memset(smp, 0, sizeof(*smp));
  rc = args_parse(smp, argc, argv);
  if (rc > 0)
    return 0; /* --help */
  if (rc < 0)
    return 2;

  snprintf(role, sizeof(role), "ptd smp %u", smp->rank);
  log_set_role(role);
  signal(SIGPIPE, SIG_IGN);

  rc = snap_store_name(smp->shm_name, sizeof(smp->shm_name), smp->prefix,
                       smp->job, smp->rank);
  if (rc != 0) {
    log_error("invalid snapshot object name for job '%s': %s", smp->job,
              pt_strerror(rc));
    return 2;
  }
  rc = uv_loop_init(&smp->loop);
  if (rc != 0) {
    log_error("cannot start the event loop: %s", uv_strerror(rc));
    return 1;
  }
  if (store_load(smp) != 0)
    goto out_loop;

  uv_signal_init(&smp->loop, &smp->sig_term);
  uv_signal_init(&smp->loop, &smp->sig_int);
  smp->sig_term.data = smp;
  smp->sig_int.data = smp;
  uv_signal_start(&smp->sig_term, on_signal, SIGTERM);
  uv_signal_start(&smp->sig_int, on_signal, SIGINT);

  rc = rpc_listen_unix(&smp->loop, smp->socket_path, &ops, on_accept, smp,
                       &smp->listener);
  if (rc != 0) {
    log_error("cannot listen on '%s': %s", smp->socket_path, pt_strerror(rc));
    smp_stop(smp);
    uv_run(&smp->loop, UV_RUN_DEFAULT);
    goto out_store;
  }
  log_info("serving job '%s' rank %u on '%s' (object '%s', %u slots%s)",
           smp->job, smp->rank, smp->socket_path, smp->shm_name, smp->nslots,
           smp->autocommit ? ", autocommit" : "");

  uv_run(&smp->loop, UV_RUN_DEFAULT);
  status = 0;
  log_info("stopped");

out_store:
  snap_store_close(smp->store);
  smp->store = NULL;
out_loop:
  if (uv_loop_close(&smp->loop) == UV_EBUSY) {
    uv_walk(&smp->loop, close_walk_cb, NULL);
    uv_run(&smp->loop, UV_RUN_DEFAULT);
    uv_loop_close(&smp->loop);
  }
  return status;
}

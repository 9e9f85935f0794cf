/*
 * train.h — the reference trainer's internal interface (pt-train).
 *
 * pt-train trains a real model, a multilayer perceptron with softmax cross-
 * entropy and AdamW, on synthetic classification data: a fixed "teacher"
 * network seeded by --seed (the same on every rank) labels inputs drawn from a
 * per-rank data RNG. Its state (parameters, both Adam moments, the data RNG,
 * the data cursor, the step counter) is what libpt snapshots and restores.
 *
 * Determinism is the point of this program: every run with the same flags and
 * rank must end with the same bytes. All arithmetic is float32 in a fixed
 * order on one thread; reductions use explicit lanes combined in a fixed order,
 * so the compiler's vectorisation cannot change a result; nothing reads the
 * clock or the address of anything to decide a value.
 *
 * Data parallelism: with WORLD_SIZE > 1 the ranks average their gradients
 * and losses every step (a deterministic all-reduce over TCP) and move in
 * lockstep, so every rank holds the same parameters and Adam moments while
 * each draws its own data.
 *
 * Modules: train_flags.c (command line), train_data.c (RNG, teacher, batches),
 * train_model.c (MLP forward/backward, AdamW), train_comm.c (the all-reduce),
 * train_main.c (the loop, libpt).
 */
#ifndef PT_TRAIN_H
#define PT_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- command line (train_flags.c) ----------------------------------------- */

struct train_flags {
  uint64_t steps;          /* last step to reach (absolute, not "this many more") */
  uint32_t hidden;         /* width of each hidden layer */
  uint32_t layers;         /* hidden layers, >= 1 */
  uint32_t batch;
  uint32_t inputs;         /* input features */
  uint32_t classes;        /* output classes, >= 2 */
  uint64_t seed;
  uint64_t snapshot_every; /* pt_snapshot() every this many steps */
  uint64_t log_every;
  uint32_t step_delay_ms;
  uint64_t hang_at_step;   /* 0: never; else stop progressing there (first
                              start only: $PT_RESTART unset or 0) */
  uint64_t state_mb;       /* 0: not given; else overrides hidden */
  int rank;                /* -1: from the environment */
  uint32_t master_port;    /* 0: from $MASTER_PORT, else 29500 */
  uint32_t comm_timeout_s; /* deadline of every wait on another rank */
  float lr, beta1, beta2, eps, weight_decay;
  bool no_pt;
  bool recover_in_place;   /* --recover-in-place */
  bool timing;
  int verbose;             /* libpt messages shown: 0 warnings, 1 info, 2 debug */
  const char *digest_file; /* NULL: none; "%r" is replaced by the rank */
};

/* The "config" region: what decides the trajectory of a run. A restored
 * snapshot whose config differs from this run's was taken by another job and
 * is refused. Fixed-size fields, no padding; zero-filled before use. */
struct train_identity {
  uint64_t magic; /* TRAIN_IDENTITY_MAGIC */
  uint64_t seed;
  uint32_t inputs, hidden, layers, classes, batch, rank;
  float lr, beta1, beta2, eps, weight_decay;
  uint32_t world; /* ranks averaging their gradients */
};
#define TRAIN_IDENTITY_MAGIC 0x3174736574707470ull /* "ptptest1" */

/* Parses argv into *f (defaults first). Returns 0, 1 when --help was printed
 * (the caller exits 0), or -EINVAL after printing the reason on stderr (the
 * caller exits 2). */
int train_flags_parse(struct train_flags *f, int argc, char **argv);

/* Bytes of registered state for a model of these dimensions (parameters and
 * both moments, plus the small regions). */
uint64_t train_state_bytes(uint32_t inputs, uint32_t hidden, uint32_t layers,
                           uint32_t classes);

/* ---- gradient averaging across ranks (train_comm.c) ----------------------- */

/* What a rank brings to the all-reduce. */
struct train_comm_config {
  int rank, world;      /* 0 <= rank < world */
  const char *addr;     /* MASTER_ADDR: rank 0 listens there, the others connect */
  uint32_t port;        /* MASTER_PORT */
  uint32_t timeout_s;   /* deadline of the join and of every exchange */
  uint64_t config_hash; /* what decides the trajectory, rank left out: ranks
                           whose hashes differ refuse to talk */
  uint64_t start_step;  /* the first step this rank trains: all must agree */
  size_t n_floats;      /* floats in every all-reduce */
};

/* The connections of one rank: rank 0 holds one per other rank, the others
 * one to rank 0. */
struct train_comm {
  int rank, world;
  int *fds;        /* [world]: fds[r] the connection to rank r, -1 where none */
  float *scratch;  /* rank 0: [n_floats], one rank's incoming gradient */
  size_t n_floats;
  uint32_t timeout_s;
};

/* Joins the ranks: rank 0 listens on addr:port (SO_REUSEADDR; retries while
 * the port is held) and waits for every other rank's handshake; the others
 * connect, retrying with backoff, and introduce themselves. Both within
 * timeout_s. World size 1 opens nothing. OUT: *c, released with
 * train_comm_close() (also after a failure). Returns 0, or after one line on
 * stderr: PT_ECONFIG (another configuration, a rank taken twice, a bad
 * MASTER_ADDR: no restart cures it), PT_ESTATE (the ranks start at different
 * steps), -ETIMEDOUT, another negated errno value, or -ENOMEM. */
int train_comm_open(struct train_comm *c, const struct train_comm_config *cfg);

/* The mean of buf[0..n_floats) and of *loss over all ranks, for step `step`.
 * Rank 0 adds the ranks' values in rank order 0, 1, 2, ... and divides by the
 * world size, then every rank gets rank 0's bytes: the result is the same bits
 * on every rank and in every run. INOUT: buf, *loss. Returns 0, or after one
 * line on stderr naming the step and the peer: -EPIPE/-ECONNRESET (a peer
 * died), -ETIMEDOUT (no answer within timeout_s), PT_ESTATE (a peer is at
 * another step), PT_EPROTO. World size 1: returns 0, nothing changed. */
int train_comm_allreduce_mean(struct train_comm *c, uint64_t step, float *buf,
                              double *loss);

/* Closes every connection; safe on a zeroed or already closed *c. */
void train_comm_close(struct train_comm *c);

/* ---- random numbers and data (train_data.c) ------------------------------- */

/* xoshiro256**: the data RNG is registered with libpt as these 32 bytes. */
struct train_rng {
  uint64_t s[4];
};

/* Seeds *r from one 64-bit value through splitmix64 (never the all-zero state). */
void train_rng_seed(struct train_rng *r, uint64_t seed);
uint64_t train_rng_next(struct train_rng *r);
/* Uniform in [0, 1) with 24 random bits: exact in float32. */
float train_rng_uniform(struct train_rng *r);
/* Approximately standard normal (Irwin–Hall of four uniforms, rescaled); no
 * libm call, so the same on every machine. */
float train_rng_normal(struct train_rng *r);

/* The teacher: a fixed random network inputs -> 32 softsign units -> classes
 * whose argmax is the label. Identical on every rank for one seed. */
struct train_teacher {
  uint32_t inputs, hidden, classes;
  float *w1; /* [hidden][inputs] */
  float *w2; /* [classes][hidden] */
  float *scratch; /* [hidden + classes] */
};

/* OUT: *t, released with train_teacher_release(). Returns 0 or -ENOMEM. */
int train_teacher_init(struct train_teacher *t, uint64_t seed, uint32_t inputs,
                       uint32_t classes);
void train_teacher_release(struct train_teacher *t);

/* Draws `batch` samples from rng: x is [batch][inputs], labels[batch] set by
 * the teacher. Advances *cursor by batch. */
void train_batch_draw(const struct train_teacher *t, struct train_rng *rng,
                      uint64_t *cursor, uint32_t batch, float *x,
                      uint32_t *labels);

/* ---- the model (train_model.c) -------------------------------------------- */

struct train_model {
  uint32_t inputs, hidden, layers, classes, batch;
  uint32_t n_linear;    /* layers + 1 linear maps */
  uint32_t *dim;        /* [n_linear + 1]: inputs, hidden..., classes */
  size_t *w_off, *b_off; /* [n_linear]: offsets into params; W is [in][out] */
  size_t n_params;
  float *params, *m, *v; /* [n_params] each: registered state */
  float *grad;          /* [n_params] */
  float **act;          /* [n_linear]: act[0] is the input batch, act[j] the
                           ReLU output of hidden layer j, [batch][dim[j]] */
  float *logits;        /* [batch][classes]: logits, then their gradient */
  float *delta_a, *delta_b; /* [batch][max dim] scratch for backprop */
  uint32_t *labels;     /* [batch] */
};

/* Allocates the model with every array zero: params, m, v and grad as lazily
 * mapped zero pages, so a run that restores them pays only for the copy.
 * OUT: *m, released with train_model_release(). Returns 0 or -ENOMEM. */
int train_model_init(struct train_model *m, uint32_t inputs, uint32_t hidden,
                     uint32_t layers, uint32_t classes, uint32_t batch);
/* A fresh start's parameters, from seed (He-uniform weights, zero biases) on
 * a freshly allocated model; the moments stay zero. Reads no other state and
 * leaves nothing else behind (its generator is local). */
void train_model_init_params(struct train_model *m, uint64_t seed);
void train_model_release(struct train_model *m);

/* Forward and backward pass over the batch in m->act[0] / m->labels: fills
 * m->grad and returns the mean cross-entropy loss. Reads params, writes only
 * scratch and grad, so it may overlap a snapshot copy of the state. */
double train_model_backprop(struct train_model *m);

struct train_adamw {
  float lr, beta1, beta2, eps, weight_decay;
};

/* One AdamW update with bias correction for step t (>= 1); weight decay is
 * decoupled and applied to weight matrices only, not biases. */
void train_model_update(struct train_model *m, const struct train_adamw *o,
                        uint64_t t);

#endif /* PT_TRAIN_H */

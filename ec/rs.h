/*
 * rs.h — Reed–Solomon erasure coding across the members of a coding group.
 *
 * A coding group is G = k + m members (the SMPs of one local rank on G nodes).
 * Each member holds a snapshot of S_i bytes; the group protects all of them so
 * that any m lost members can be rebuilt from the others. This module is pure
 * computation over buffers: it never opens a socket or a file. The daemon moves
 * the pieces between nodes as the layout says and calls the coder on them.
 *
 * ---- Layout ---------------------------------------------------------------
 *
 * Members may differ in size. Every member is padded (virtually: the caller's
 * buffer stays S_i bytes, the padding reads as zeros) to P = the largest S_i
 * rounded up to a multiple of k*64 bytes (at least k*64), and cut into k
 * chunks of C = P/k bytes, so C is a multiple of 64 and at least 64: ISA-L
 * never sees a fragment shorter than 64 bytes or off a 64-byte boundary.
 * Chunk c of member i is bytes [c*C, (c+1)*C) of its padded snapshot.
 *
 * There are G stripes. Stripe j has G pieces, at positions q = 0..G-1:
 * positions 0..k-1 are data, positions k..G-1 are parity rows 0..m-1. The
 * piece at position q of stripe j belongs to member (j + q) mod G:
 *
 *   position q of stripe j   member         what
 *   q <  k                   (j + q) % G    data chunk c = q of that member
 *   q >= k                   (j + q) % G    parity row r = q - k, stored by that
 *                                           member at offset r*C of its parity
 *                                           area (m*C bytes)
 *
 * Inverted, for member i:
 *
 *   its data chunk c (0..k-1)   is position c     of stripe (i - c) mod G
 *   its parity row r (0..m-1)   is position k + r of stripe (i - k - r) mod G
 *
 * so every member holds exactly one piece of every stripe, every chunk of its
 * S bytes lands in exactly one stripe, and every stripe gets k data chunks from
 * k distinct members (j, j+1, ..., j+k-1) and keeps its m parity rows on the
 * next m members (j+k, ..., j+G-1), as DESIGN.md describes. Losing any m
 * members erases at most m pieces of each stripe. Example, 4+2 (G = 6;
 * "M3.c1" is chunk 1 of member 3, "M0.p1" parity row 1 kept by member 0):
 *
 *   stripe | pos 0   pos 1   pos 2   pos 3  | pos 4   pos 5
 *   -------+--------------------------------+---------------
 *     0    | M0.c0   M1.c1   M2.c2   M3.c3  | M4.p0   M5.p1
 *     1    | M1.c0   M2.c1   M3.c2   M4.c3  | M5.p0   M0.p1
 *     2    | M2.c0   M3.c1   M4.c2   M5.c3  | M0.p0   M1.p1
 *     3    | M3.c0   M4.c1   M5.c2   M0.c3  | M1.p0   M2.p1
 *     4    | M4.c0   M5.c1   M0.c2   M1.c3  | M2.p0   M3.p1
 *     5    | M5.c0   M0.c1   M1.c2   M2.c3  | M3.p0   M4.p1
 *
 * Each member therefore sends its k chunks to m holders each (k*m sends, about
 * m*S bytes), receives k*m chunks for the m parity rows it keeps, and stores
 * m*C = m*P/k bytes of parity.
 *
 * ---- Code -----------------------------------------------------------------
 *
 * The (k+m) x k encode matrix is ISA-L's gf_gen_cauchy1_matrix (identity on
 * top, Cauchy rows 1/(i ^ j) below; MDS for every k + m <= 32), never
 * gf_gen_rs_matrix. Parity row r of a stripe = sum over c of
 * A[k+r][c] * chunk_c in GF(2^8) (polynomial 0x11d). Decoding inverts the rows
 * of k surviving pieces; decode tables are cached per (sources, outputs)
 * pattern in the coder, behind a mutex, so one coder may serve many threads.
 *
 * ---- Verification ---------------------------------------------------------
 *
 * Every member comes with the per-block CRC32C table recorded when its
 * snapshot was taken: one CRC per KERN_BLOCK_SIZE block from the start of the
 * member's S bytes (the last block shorter), each crc32_iscsi(block, len,
 * CRC32C_SEED) as kernels/kernels.h defines. rs_group_decode() checks the
 * survivors' data against their own tables (a damaged chunk becomes an
 * erasure, and nothing computed from it is kept), checks every rebuilt chunk
 * against its owner's table, and checks that rebuilt padding is zero. The
 * checksums are computed inside the decode, slice by slice, while the bytes
 * are in cache. A mismatch after decoding with parity pieces means one of the
 * pieces used was damaged: the stripe is decoded again from another
 * combination of survivors until the result verifies or no combination is
 * left (PT_ECHECKSUM). A survivor passed without a table is trusted as is
 * (its owner checked it, e.g. rs_member_verify() on its own node).
 *
 * ---- Errors ---------------------------------------------------------------
 *
 * Every function that can fail returns 0 or a negative code of pt.h's error
 * space: -EINVAL (bad arguments), -ENOMEM, PT_ENOFRAG (more pieces lost than
 * the code can rebuild), PT_ECHECKSUM (data that fails its checksum and no
 * clean combination left). A failing call leaves a sentence naming the cause
 * in rs_last_error() of the calling thread.
 *
 * ---- Threads and slices ---------------------------------------------------
 *
 * Large chunks are processed in cache-sized slices (opts.slice_bytes). Each
 * coder call spreads its slices over opts.threads threads (the calling thread
 * plus threads started for the call and joined before it returns); small
 * calls run on the calling thread only. Distinct calls on one coder may run
 * concurrently as long as their output buffers do not overlap.
 */
#ifndef PT_EC_RS_H
#define PT_EC_RS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RS_MAX_MEMBERS 32 /* k + m at most */
#define RS_ALIGN 64       /* chunk sizes and offsets are multiples of this */

/* The calling thread's message for its last failed rs_* call; never NULL. */
const char *rs_last_error(void);

/* ---- layout ---------------------------------------------------------------- */

struct rs_layout {
  unsigned k, m, g;                    /* g = k + m */
  size_t chunk_bytes;                  /* C: multiple of RS_ALIGN, >= RS_ALIGN */
  size_t padded_bytes;                 /* P = k * C */
  size_t parity_bytes;                 /* m * C: one member's parity area */
  size_t member_bytes[RS_MAX_MEMBERS]; /* S_i as given */
};

/* Lays out a group of k + m members of member_bytes[0..nmembers) bytes (0 is
 * allowed). k >= 1, m >= 1, k + m <= RS_MAX_MEMBERS and nmembers == k + m,
 * else -EINVAL. OUT: *l (a plain value: nothing to release). */
int rs_layout_init(struct rs_layout *l, unsigned k, unsigned m,
                   const size_t *member_bytes, size_t nmembers);

/* Position algebra of the table above. All arguments in range. */
static inline unsigned rs_layout_chunk_stripe(const struct rs_layout *l,
                                              unsigned member, unsigned chunk)
{
  return (member + l->g - chunk) % l->g;
}
static inline unsigned rs_layout_parity_stripe(const struct rs_layout *l,
                                               unsigned member, unsigned row)
{
  return (member + 2 * l->g - l->k - row) % l->g;
}
static inline unsigned rs_layout_piece_member(const struct rs_layout *l,
                                              unsigned stripe, unsigned pos)
{
  return (stripe + pos) % l->g;
}
/* Bytes of chunk `chunk` of `member` that hold snapshot data (0..C); the rest
 * of the chunk is zero padding. */
size_t rs_layout_chunk_valid(const struct rs_layout *l, unsigned member,
                             unsigned chunk);

/* One piece of a stripe, named both ways. */
struct rs_piece {
  uint8_t stripe;
  uint8_t pos;       /* 0..G-1 within the stripe */
  uint8_t member;    /* who holds it */
  uint8_t is_parity; /* 0: data chunk `index`; 1: parity row `index` */
  uint8_t index;
};

/* A chunk a member sends to a parity holder. */
struct rs_send {
  unsigned chunk;      /* data chunk c of the sender = data row of the stripe */
  unsigned stripe;
  unsigned to;         /* receiving member */
  unsigned parity_row; /* the row `to` keeps for this stripe */
  size_t offset;       /* c * C, in the sender's snapshot */
  size_t valid;        /* bytes of real data at offset (the rest is padding) */
};

/* What `member` sends: k*m entries, chunk-major (chunk 0 to rows 0..m-1,
 * then chunk 1, ...). OUT: out, room for k*m entries. Returns k*m or -EINVAL. */
int rs_layout_sends(const struct rs_layout *l, unsigned member,
                    struct rs_send *out);

/* A parity row a member keeps. */
struct rs_parity_ref {
  unsigned stripe;
  unsigned row;                  /* parity row r */
  size_t offset;                 /* r * C, in the keeper's parity area */
  uint8_t from[RS_MAX_MEMBERS];  /* from[c]: the member whose chunk c is data
                                    row c of this stripe (k entries) */
};

/* The m parity rows `member` keeps, by row. OUT: out, room for m entries.
 * Returns m or -EINVAL. */
int rs_layout_parity(const struct rs_layout *l, unsigned member,
                     struct rs_parity_ref *out);

/* How one stripe is rebuilt: k source pieces, and the lost pieces they give. */
struct rs_stripe_plan {
  uint32_t src_mask;  /* bit q: position q is a source */
  uint32_t lost_mask; /* bit q: position q belongs to a lost member */
  unsigned nsrc, nlost;
  struct rs_piece src[RS_MAX_MEMBERS];  /* nsrc (= k when any is lost) */
  struct rs_piece lost[RS_MAX_MEMBERS]; /* nlost */
};

struct rs_plan {
  uint32_t lost_members; /* bit i: member i lost */
  unsigned nstripes;     /* G */
  struct rs_stripe_plan stripe[RS_MAX_MEMBERS];
};

/* For a set of lost members (bit i = member i), which surviving pieces
 * rebuild which lost pieces, stripe by stripe. Sources are the k surviving
 * positions with the lowest numbers (surviving data first, so a stripe that
 * lost only parity is simply re-encoded). A stripe without losses has no
 * sources. PT_ENOFRAG when more than m members are lost; -EINVAL on a bit at
 * or above G. OUT: *out. */
int rs_layout_plan(const struct rs_layout *l, uint32_t lost_members,
                   struct rs_plan *out);

/* ---- coder ----------------------------------------------------------------- */

struct rs_coder;

struct rs_coder_opts {
  unsigned threads;   /* threads per call, 1..64; 0: 1 */
  size_t slice_bytes; /* bytes per piece per slice, a multiple of RS_ALIGN
                         up to KERN_BLOCK_SIZE; 0: about 256 KiB of sources
                         per slice */
};

/* A coder for k + m (same limits as rs_layout_init). opts may be NULL.
 * OUT: *out, freed with rs_coder_free(). */
int rs_coder_new(struct rs_coder **out, unsigned k, unsigned m,
                 const struct rs_coder_opts *opts);
/* c may be NULL. No call on c may be running. */
void rs_coder_free(struct rs_coder *c);

/* Stripe-level calls: every piece is `len` bytes, len a multiple of RS_ALIGN
 * and >= RS_ALIGN (-EINVAL otherwise); a member's partial last chunk must be
 * padded with zeros by the caller. Buffers need no particular alignment, but
 * 64-byte aligned ones are faster; outputs must not overlap inputs. */

/* Whole-stripe encode. IN: data[k]. OUT: parity[m] (overwritten). */
int rs_stripe_encode(struct rs_coder *c, size_t len,
                     const void *const *data, void *const *parity);

/* Incremental encode: folds data row `row` (0..k-1) of a stripe into parity
 * rows first_row..first_row+nrows-1 (INOUT: parity[nrows], XOR-accumulated).
 * Starting from zeroed parity and folding each of the k rows once, in any
 * order, gives exactly what rs_stripe_encode() gives; a parity holder keeping
 * one row passes first_row = its row and nrows = 1. */
int rs_stripe_update(struct rs_coder *c, size_t len, unsigned row,
                     const void *chunk, unsigned first_row, unsigned nrows,
                     void *const *parity);

/* Rebuilds pieces of one stripe. pieces[q] (q = 0..G-1, by position) points at
 * len bytes: IN for the positions in `avail`, OUT for those in `want`
 * (avail and want disjoint; other entries may be NULL). Decodes from the k
 * lowest positions of avail. PT_ENOFRAG when avail has fewer than k bits.
 * Nothing is verified here: rs_group_decode() is the verifying form. */
int rs_stripe_decode(struct rs_coder *c, size_t len, void *const *pieces,
                     uint32_t avail, uint32_t want);

/* Repair pipelining (DESIGN.md "Restore" 2): the code is linear, so piece
 * `want` of a stripe is the sum over its k sources (the positions of
 * src_mask, exactly k bits, ascending) of coefs[j] times source j, and the
 * survivors can add up their terms along a chain, each sending one piece's
 * worth of bytes. OUT: coefs[k]. -EINVAL for a bad pattern (want in
 * src_mask, or src_mask not k positions of the group); -EIO for a singular
 * one (never, for an MDS code). */
int rs_decode_coefs(const struct rs_coder *c, uint32_t src_mask, unsigned want,
                    uint8_t *coefs);

/* One term of such a sum: acc = coef * in (first) or acc ^ coef * in, over
 * len bytes, any len (GF(2^8), ISA-L). in and acc must not overlap. */
void rs_scale_fold(size_t len, uint8_t coef, const void *in, void *acc, int first);

/* ---- group-level calls ----------------------------------------------------- */

/* One member as a group call sees it. */
struct rs_member {
  void *data;           /* the snapshot, `bytes` bytes (see each call) */
  size_t bytes;         /* must equal the layout's member_bytes[i] */
  void *parity;         /* its parity area, layout parity_bytes, or NULL */
  const uint32_t *crcs; /* kern_nblocks(bytes) block CRCs, or NULL */
};

/* Computes every parity row of the group from every member's data.
 * IN: members[i].data (not NULL unless bytes is 0) for all G members.
 * OUT: members[i].parity for each member whose parity is not NULL (a NULL
 * parity area is simply not computed: a node can compute only its own rows).
 * crcs unused. */
int rs_group_encode(struct rs_coder *c, const struct rs_layout *l,
                    const struct rs_member *members);

/* Checks one member's data against its own CRC table (crcs required).
 * OUT: *bad_chunks (may be NULL): bit c set when a failing block overlaps
 * chunk c. Returns 0 or PT_ECHECKSUM. */
int rs_member_verify(struct rs_coder *c, const struct rs_layout *l,
                     unsigned member, const struct rs_member *mb,
                     uint32_t *bad_chunks);

enum {
  /* Write rebuilt chunks of survivors found damaged back into their data. */
  RS_DECODE_REPAIR = 1u << 0,
};

struct rs_decode_report {
  uint32_t corrupt_members; /* survivors whose data failed their own CRCs */
  uint32_t repaired_members;/* of those, the ones RS_DECODE_REPAIR rewrote */
  unsigned pieces_rebuilt;  /* pieces decoded in the final, verified state */
  unsigned rounds;          /* decode rounds: 1 when the first choice verified */
  unsigned retries;         /* stripe decodes beyond the first round */
};

/* Rebuilds the members in `lost` (bit i = member i) from the others, verified.
 *
 * Lost member i: OUT members[i].data (bytes bytes, not NULL unless 0) and,
 * when not NULL, members[i].parity (its m parity rows); IN members[i].crcs
 * (required: the table recorded when its snapshot was taken).
 * Survivor i: IN members[i].data (required) and members[i].parity (NULL: its
 * parity pieces are unavailable); IN members[i].crcs, or NULL when the caller
 * has already verified that member (rs_member_verify()). Survivors are not
 * written unless flags has RS_DECODE_REPAIR.
 *
 * PT_ENOFRAG: more than m members lost, or a stripe with fewer than k pieces
 * available; nothing useful was written. PT_ECHECKSUM: no combination of the
 * available pieces verified; the lost members' buffers hold garbage and must
 * not be used. rep may be NULL. Lost = 0 only verifies (and repairs). */
int rs_group_decode(struct rs_coder *c, const struct rs_layout *l,
                    const struct rs_member *members, uint32_t lost,
                    unsigned flags, struct rs_decode_report *rep);

#endif /* PT_EC_RS_H */

/*
 * smp_protect.h — the protection engine of one SMP: what it sends to the
 * parity holders of its coding group after it sealed a step, and what it
 * does with the chunks its group sends it (issue 10, DESIGN.md "Erasure
 * coding across nodes"). No sockets, no event loop: the transport carries
 * (header, bytes) pairs between the members and calls this on both ends.
 *
 * The layout is ec/rs.h's, over the members' slot data bytes S_i (a slot's
 * regions and blob area, snap_store_slot_bytes()). For step N in slot X,
 * member i:
 *
 *   as a sender: smp_protect_sends() lists its k*m sends (rs_layout_sends):
 *     data chunk c goes to each of the m holders of its stripe, with the
 *     chunk's valid bytes (the padding past them is not sent: it is zero)
 *     and their CRC32C (common/crc32c.h: crc32c(bytes, valid), computed
 *     here over the chunk itself, since the snapshot's own table is per
 *     region block and a chunk starts anywhere). Each send is acknowledged
 *     by its holder (smp_protect_ack); all acknowledged: its own chunks are
 *     safe.
 *
 *   as a holder: smp_protect_begin() takes the m parity rows it keeps in
 *     slot X's parity area for step N (zeroed as the folds reach them, not
 *     all at once); smp_protect_receive() checks each
 *     chunk that arrives against the layout, the step and its CRC, and
 *     only then folds it into the right row (rs_stripe_update). A row is
 *     complete when its k data rows were folded, each once.
 *
 *   The slot is protected when every send is acknowledged and every row it
 *   keeps is complete (smp_protect_done). smp_protect_mark() then sets the
 *   slot PROTECTED in the object (snap_slot_protect: from PINNED, the first
 *   phase of the commit).
 *
 * Hostile input. A chunk is refused, nothing folded and nothing counted,
 * with a sentence in smp_protect_error() and one code per cause:
 *   -ENOENT        no slot is being protected for its step (never begun,
 *                  or given to another step since)
 *   PT_EPROTO      it does not match the layout: a stripe, parity row,
 *                  sender or chunk index out of range, or a stripe whose
 *                  row `parity_row` this member does not keep, or a sender
 *                  that does not own data row `chunk` of that stripe
 *   -EMSGSIZE      its length is not the valid bytes of that chunk
 *                  (rs_layout_chunk_valid): oversized or short
 *   PT_ECHECKSUM   its bytes fail its CRC
 *   -EALREADY      that row already folded that chunk for this step
 *   -EINVAL        no bytes given for a non-empty chunk
 *
 * Sizes. The layout's chunk C comes from the group's largest member. A slot
 * whose parity area is smaller than m*C cannot hold its rows:
 * smp_protect_begin() refuses it with PT_ECONFIG naming both sizes. The
 * SMP sizes its object's areas from its own S (smp_trainer.c), so a group
 * whose members differ in size past what C's rounding absorbs is refused
 * there, never protected into too small an area.
 *
 * Not thread-safe: one engine is driven from one thread (the SMP's loop);
 * the coder's own threads (opts) split each fold.
 *
 * Lifetime of the bytes: the sends point into the slot's data; the SMP
 * must keep that slot from being handed to another step while the
 * transport reads them, or forget the protection (smp_protect_forget)
 * when it is. Bytes that changed after smp_protect_sends() fail their
 * chunk CRC at the holder and are never folded. With smp_protect_plan()
 * the CRC is each piece's, taken as the piece is queued (smp_peer.c): a
 * byte changed before that is folded as sent, one changed while it is
 * queued fails the piece's CRC; so the SMP never hands a slot under
 * protection to its trainer (snap_slot_acquire_avoiding).
 */
#ifndef PT_SMP_PROTECT_H
#define PT_SMP_PROTECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ec/rs.h"
#include "snapshot/snap_store.h"

#define SMP_PROTECT_MAX_SENDS 256u /* k*m with k+m <= RS_MAX_MEMBERS */

/* The header of one chunk between members: what the transport carries in
 * front of its `valid` bytes. */
struct smp_protect_chunk {
  uint64_t step;       /* the step sealed */
  uint32_t stripe;     /* 0..G-1 */
  uint32_t parity_row; /* the row the receiver keeps for that stripe */
  uint32_t from;       /* the sending member */
  uint32_t chunk;      /* the sender's data chunk = data row of the stripe */
  uint64_t valid;      /* bytes that follow: the chunk's data, no padding */
  uint32_t crc;        /* crc32c() of those bytes */
};

/* A piece of one chunk: `len` bytes of it from byte `offset`, for a
 * transport that moves a chunk in pieces, each checked on its own before it
 * reaches the engine (a bulk frame's CRC32C). */
struct smp_protect_piece {
  uint64_t step;
  uint32_t stripe, parity_row, from, chunk; /* as smp_protect_chunk */
  uint64_t offset;     /* into the chunk's valid bytes */
  uint64_t len;        /* bytes that follow */
};

/* One send: the header, its destination, and where its bytes lie. */
struct smp_protect_send {
  struct smp_protect_chunk hdr;
  uint32_t to;         /* the receiving member */
  const void *bytes;   /* hdr.valid bytes in the slot's data (NULL when 0) */
};

/* Where a slot stands (smp_protect_status). */
struct smp_protect_status {
  bool active;         /* a step is being protected in the slot */
  uint64_t step;
  bool sends_ready;    /* smp_protect_sends() was called */
  unsigned nsends, nacked;      /* k*m, and those acknowledged */
  unsigned nrows, nrows_done;   /* m, and those with all k chunks */
  unsigned nreceived;           /* chunks folded, of k*m */
  bool done;           /* protected: every send acked, every row complete */
};

struct smp_protect;

/* An engine for member `member` of a k+m group whose members have
 * member_bytes[0..k+m) slot data bytes, for a store of nslots slots
 * (<= SNAP_MAX_SLOTS). opts: the coder's (NULL: one thread). -EINVAL
 * (with err) on a layout rs_layout_init refuses; -ENOMEM.
 * OUT: *out, freed with smp_protect_free(). err may be NULL. */
int smp_protect_new(struct smp_protect **out, unsigned k, unsigned m,
                    unsigned member, const size_t *member_bytes,
                    unsigned nslots, const struct rs_coder_opts *opts,
                    char *err, size_t errlen);
void smp_protect_free(struct smp_protect *p); /* p may be NULL */

/* The group's layout (member sizes, chunk bytes C, parity bytes m*C). */
const struct rs_layout *smp_protect_layout(const struct smp_protect *p);

/* The sentence of the last call's refusal ("" when the last call of
 * begin, sends, ack or receive succeeded); never NULL. */
const char *smp_protect_error(const struct smp_protect *p);

/* Starts protecting step in slot: the slot forgets what it protected
 * before, any other slot protecting the same step forgets it, and the m
 * parity rows this member keeps (parity[0, m*C)) are rewritten from zero
 * as chunks come (a row is all written once complete). parity_len:
 * the area's bytes; PT_ECONFIG when below m*C. -EINVAL on a slot out of
 * range or a NULL area. The area stays the caller's; the engine writes it
 * until the slot is forgotten or begun again. */
int smp_protect_begin(struct smp_protect *p, uint32_t slot, uint64_t step,
                      void *parity, size_t parity_len);

/* The k*m sends of the slot's own step, from its data (bytes: this
 * member's S, as the layout has it; -EINVAL otherwise). Computes the k
 * chunk CRCs; resets the acknowledgements. PT_ESTATE when the slot was not
 * begun. OUT: out, room for k*m sends. Returns k*m. */
int smp_protect_sends(struct smp_protect *p, uint32_t slot, const void *data,
                      size_t bytes, struct smp_protect_send *out);

/* smp_protect_sends() without the chunk CRCs (hdr.crc 0): for a
 * transport that checks every piece it moves (smp_protect_receive_piece),
 * so that the sender reads its data once, as it sends it. */
int smp_protect_plan(struct smp_protect *p, uint32_t slot, const void *data,
                     size_t bytes, struct smp_protect_send *out);

/* Holder `to` acknowledged chunk `chunk` of step. -ENOENT (no slot for
 * step), PT_ESTATE (sends not made), PT_EPROTO (no such send: `to` holds
 * no row of that chunk's stripe), -EALREADY (acknowledged already). */
int smp_protect_ack(struct smp_protect *p, uint64_t step, unsigned to,
                    unsigned chunk);

/* A chunk sent to this member: checked, then folded (see "Hostile input"
 * for every refusal). bytes: h->valid bytes. */
int smp_protect_receive(struct smp_protect *p,
                        const struct smp_protect_chunk *h, const void *bytes);

/* A piece of a chunk sent to this member, its bytes already checked by the
 * transport: checked against the layout as a chunk is, then folded. The
 * pieces of one chunk arrive in order: offset is where the last one ended
 * (an earlier offset: -EALREADY; a later one: PT_EPROTO); every piece but
 * the chunk's last is a multiple of RS_ALIGN bytes (PT_EPROTO); a piece
 * past the chunk's valid bytes, or an empty one of a non-empty chunk,
 * -EMSGSIZE. A chunk with no valid bytes comes as one empty piece. The
 * last piece completes the chunk (it counts as smp_protect_receive's
 * whole chunk). A chunk taken whole is not taken in pieces, nor the
 * reverse (-EALREADY). */
int smp_protect_receive_piece(struct smp_protect *p,
                              const struct smp_protect_piece *h,
                              const void *bytes);

/* The slot's protection is abandoned (its slot is reused, the step was
 * skipped or dropped): nothing more is accepted for it. */
void smp_protect_forget(struct smp_protect *p, uint32_t slot);

/* OUT: *st. A slot out of range reads as inactive. */
void smp_protect_status(const struct smp_protect *p, uint32_t slot,
                        struct smp_protect_status *st);
/* Whether slot's step is protected here (status.done). */
bool smp_protect_done(const struct smp_protect *p, uint32_t slot);
/* The slot protecting step; -ENOENT. OUT: *slot. */
int smp_protect_find(const struct smp_protect *p, uint64_t step,
                     uint32_t *slot);

/* ---- on a snapshot object ---- */

/* smp_protect_begin() with slot's parity area of s (PT_ECONFIG when the
 * object has none or a smaller one than the layout's). The slot must hold
 * step WRITING (a holder may begin as soon as its own trainer took the
 * slot: the trainer never writes the parity area), SEALED, PINNED or
 * PROTECTED; PT_ESTATE otherwise, nothing zeroed: a COMMITTED slot's
 * parity stays intact until a newer step commits. */
int smp_protect_begin_store(struct smp_protect *p, struct snap_store *s,
                            uint32_t slot, uint64_t step);
/* smp_protect_sends() from slot's data in s, which must hold the slot's
 * step SEALED, PINNED or PROTECTED (PT_ESTATE otherwise). */
int smp_protect_sends_store(struct smp_protect *p, const struct snap_store *s,
                            uint32_t slot, struct smp_protect_send *out);
/* When the slot is protected here, its step becomes PROTECTED in s
 * (snap_slot_protect). PT_ESTATE: not protected yet here, or the step is
 * not PINNED yet (call again after the pin); else snap_slot_protect's
 * code. */
int smp_protect_mark(const struct smp_protect *p, struct snap_store *s,
                     uint32_t slot);

#endif /* PT_SMP_PROTECT_H */

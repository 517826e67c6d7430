/* pylog native core: Kafka RecordBatch v2 codec, CRC32C, murmur2, segment
 * scanning, index search and cross-process primitives.
 *
 * Pure C (C11), no Python objects: pointers and lengths in, an int status out.
 * Every read of caller-supplied bytes is bounds-checked against the given
 * length; hostile input never causes an out-of-bounds access.
 *
 * Status convention for functions returning int (unless documented otherwise):
 *   0            success
 *   -999..-1     -errno of a failed system call
 *   <= -1000     PL_E_* status of this library (bad argument, no space, busy...)
 *   > 0          PL_C_* corruption reason code; pl_reason_str() describes it
 * pylog/status.py maps each to a pylog exception.
 *
 * The implementation is split by concern over csrc/ (crc, encode, decode,
 * scan, index, state, lock, append, sync, status), sharing csrc/internal.h.
 *
 * All on-disk integers are big-endian (Kafka format).  The shared-memory
 * structures (partition state, doorbell slots) use native byte order.
 */
#ifndef PYLOG_NATIVE_H
#define PYLOG_NATIVE_H

/* Every constant is an enum, not a #define: the cffi declarations are this
 * header run through the C preprocessor (pylog/_build_native.py, with
 * PL_CDEF defined), which keeps enums and drops macros. */
#ifndef PL_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

/* ---- generic status codes ----
 * One table for every negative status of this library: all are below
 * -1000, so none can be read as a -errno (which the I/O calls return), and
 * pylog/status.py maps each to an exception. */
enum pl_status {
    PL_OK                  = 0,
    PL_E_NOSPACE           = -1001, /* output does not fit; *written = needed size   */
    PL_E_INVAL             = -1002, /* bad argument                                   */
    PL_E_BUSY              = -1003, /* seqlock never stable (writer died mid-publish) */
    PL_E_STALE             = -1004, /* state names another segment: remap, retry      */
    PL_E_DELETED           = -1005, /* the partition was deleted (P-2)                */
    PL_E_APPENDED_NO_INDEX = -1006, /* appended; no index entry (see pl_append_record) */
    PL_E_VANISHED          = -1007, /* the synced file is no longer at its path (L-6) */
    PL_E_NOFD              = -1008, /* no descriptor for an fdatasync (not sticky)    */
    PL_E_FENCED            = -1009, /* commit table: another member owns the slot (C-4) */
    PL_E_DAMAGED           = -1010, /* commit table: a slot holds what no writer stores (C-7) */
    PL_E_MAX               = -1000  /* every PL_E_* is below this                     */
};

/* ---- corruption reason codes (positive) ---- */
enum pl_corruption {
    PL_C_TRUNCATED_HEADER   = 1,   /* fewer than 12 bytes for offset+length   */
    PL_C_BATCH_LENGTH       = 2,   /* B-2: batchLength < 49                   */
    PL_C_BATCH_TRUNCATED    = 3,   /* B-2: batch extends past the buffer      */
    PL_C_MAGIC              = 4,   /* B-3: magic != 2                         */
    PL_C_CRC                = 5,   /* B-4: CRC32C mismatch                    */
    PL_C_OFFSET_MISMATCH    = 6,   /* baseOffset != expected next offset      */
    PL_C_OFFSET_RANGE       = 7,   /* offsets outside segment int32 range     */
    PL_C_VARINT             = 8,   /* varint unterminated / too long     */
    PL_C_LENGTH             = 9,   /* length < -1 or beyond the record   */
    PL_C_RECORD_SIZE        = 10,  /* parsed size != record length       */
    PL_C_TRAILING           = 11,  /* records do not end at section end  */
    PL_C_COUNT              = 12,  /* records parsed != recordsCount     */
    PL_C_OFFSET_DELTA       = 13,  /* offsetDelta order / range          */
    PL_C_HEADERS_COUNT      = 14,  /* headersCount < 0                   */
    PL_C_LAST_OFFSET_DELTA  = 15,  /* lastOffsetDelta < 0 or recordsCount < 0 */
    PL_C_POSITION_RANGE     = 16,  /* batch position does not fit int32       */
    PL_C_EMPTY_BATCH        = 17,  /* B-5: recordsCount is 0                  */
    PL_C_MAX                = 17
};

/* What a status or reason code means, for messages ("unknown status" for
 * any other value). */
const char *pl_reason_str(int code);

/* ---- byte layout (FORMAT.rst; pylog/_format.py holds the same values and
 * checks them against these at import) ---- */
enum pl_layout {
    /* Record batch (FORMAT.rst, B table): header field offsets, big-endian */
    PL_OFF_BASE_OFFSET            = 0,   /* int64 */
    PL_OFF_BATCH_LENGTH           = 8,   /* int32, B-2 */
    PL_OFF_PARTITION_LEADER_EPOCH = 12,  /* int32 */
    PL_OFF_MAGIC                  = 16,  /* int8, B-3 */
    PL_OFF_CRC                    = 17,  /* uint32, B-4 */
    PL_OFF_ATTRIBUTES             = 21,  /* int16; the CRC covers from here */
    PL_OFF_LAST_OFFSET_DELTA      = 23,  /* int32 */
    PL_OFF_BASE_TIMESTAMP         = 27,  /* int64 */
    PL_OFF_MAX_TIMESTAMP          = 35,  /* int64 */
    PL_OFF_PRODUCER_ID            = 43,  /* int64 */
    PL_OFF_PRODUCER_EPOCH         = 51,  /* int16 */
    PL_OFF_BASE_SEQUENCE          = 53,  /* int32 */
    PL_OFF_RECORDS_COUNT          = 57,  /* int32 */
    PL_BATCH_HEADER_SIZE          = 61,  /* the records section starts here */
    PL_LOG_OVERHEAD               = 12,  /* baseOffset + batchLength: not in batchLength */
    PL_BATCH_LENGTH_MIN           = 49,  /* B-2: header bytes after batchLength */
    PL_MAGIC_V2                   = 2,   /* B-3 */
    PL_ATTR_CODEC_MASK            = 0x07,
    PL_ATTR_TIMESTAMP_TYPE        = 0x08,
    PL_ATTR_TRANSACTIONAL         = 0x10,  /* */
    PL_ATTR_CONTROL               = 0x20,  /* */
    /* I-1, T-1: index entries */
    PL_INDEX_ENTRY_SIZE           = 8,   /* int32 relative offset, int32 position */
    PL_TIMEINDEX_ENTRY_SIZE       = 12,  /* int64 timestamp, int32 relative offset */
    /* P-2, P-3: partition.state, host byte order */
    PL_STATE_SIZE                 = 64,  /* the seqlock's bytes */
    PL_STATE_MAGIC                = 0x54534C50, /* 'PLST' read as a little-endian uint32 */
    PL_STATE_VERSION              = 1,
    PL_STATE_OFF_SEQ              = 8,
    PL_STATE_OFF_VALS             = 16,  /* six int64: see pl_state_publish */
    PL_STATE_VALS                 = 6,
    PL_STATE_INDEX_POSITION       = 64,  /* int64: batch of the last index entry (I-2) */
    PL_STATE_TAKEOVER             = 72,  /* uint32: 1 after a takeover, until cleaned (P-3) */
    PL_STATE_DURABLE              = 80,  /* P-7: int64 base, position, next, check */
    PL_STATE_LOCK_WORD            = 128, /* uint32 holder token, uint32 waiters (P-3) */
    PL_LIVENESS_BASE_LOG2         = 32,  /* liveness byte of a token: 2**32 + token */
    /* L-3: doorbell slot: uint32 seq, uint32 waiters */
    PL_DOORBELL_SLOT_SIZE         = 8,
    /* decoded records (pl_records_decode, pl_fetch) */
    PL_RECORD_FIELDS              = 8,   /* int64 per decoded record */
    PL_HEADER_FIELDS              = 4    /* int64 per decoded header */
};
#ifndef PL_CDEF
_Static_assert(PL_OFF_BATCH_LENGTH == PL_OFF_BASE_OFFSET + 8, "baseOffset is an int64");
_Static_assert(PL_OFF_PARTITION_LEADER_EPOCH == PL_OFF_BATCH_LENGTH + 4, "batchLength int32");
_Static_assert(PL_LOG_OVERHEAD == PL_OFF_PARTITION_LEADER_EPOCH, "batchLength counts from 12");
_Static_assert(PL_OFF_MAGIC == PL_OFF_PARTITION_LEADER_EPOCH + 4, "epoch is an int32");
_Static_assert(PL_OFF_CRC == PL_OFF_MAGIC + 1, "magic is one byte");
_Static_assert(PL_OFF_ATTRIBUTES == PL_OFF_CRC + 4, "crc is a uint32");
_Static_assert(PL_OFF_LAST_OFFSET_DELTA == PL_OFF_ATTRIBUTES + 2, "attributes int16");
_Static_assert(PL_OFF_BASE_TIMESTAMP == PL_OFF_LAST_OFFSET_DELTA + 4, "delta is an int32");
_Static_assert(PL_OFF_MAX_TIMESTAMP == PL_OFF_BASE_TIMESTAMP + 8, "timestamps are int64");
_Static_assert(PL_OFF_PRODUCER_ID == PL_OFF_MAX_TIMESTAMP + 8, "timestamps are int64");
_Static_assert(PL_OFF_PRODUCER_EPOCH == PL_OFF_PRODUCER_ID + 8, "producerId is an int64");
_Static_assert(PL_OFF_BASE_SEQUENCE == PL_OFF_PRODUCER_EPOCH + 2, "epoch is an int16");
_Static_assert(PL_OFF_RECORDS_COUNT == PL_OFF_BASE_SEQUENCE + 4, "sequence is an int32");
_Static_assert(PL_BATCH_HEADER_SIZE == PL_OFF_RECORDS_COUNT + 4, "count is an int32");
_Static_assert(PL_BATCH_LENGTH_MIN == PL_BATCH_HEADER_SIZE - PL_LOG_OVERHEAD, "B-2 minimum");
_Static_assert(PL_STATE_OFF_VALS + 8 * PL_STATE_VALS == PL_STATE_SIZE, "P-2: 64 bytes");
_Static_assert(PL_STATE_INDEX_POSITION >= PL_STATE_SIZE, "outside the seqlock");
_Static_assert(PL_STATE_LOCK_WORD >= PL_STATE_INDEX_POSITION + 8, "apart from the index word");
_Static_assert(PL_STATE_TAKEOVER >= PL_STATE_INDEX_POSITION + 8 &&
               PL_STATE_TAKEOVER + 4 <= PL_STATE_LOCK_WORD, "its own word");
_Static_assert(PL_E_NOFD < PL_E_MAX && PL_E_NOSPACE < PL_E_MAX, "outside the errno range");
#define PL_LIVENESS_BASE ((int64_t)1 << PL_LIVENESS_BASE_LOG2)
#endif

/* ---- CRC32C (Castagnoli), same semantics as crc32c.crc32c(data, value) ---- */
uint32_t pl_crc32c(uint32_t crc, const uint8_t *p, size_t n);          /* dispatching */
uint32_t pl_crc32c_portable(uint32_t crc, const uint8_t *p, size_t n); /* slicing-by-8 */
uint32_t pl_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n);       /* only if available */
int pl_crc32c_hw_available(void);

/* ---- Kafka Utils.murmur2 ---- */
int32_t pl_murmur2(const uint8_t *p, size_t n);
/* Kafka's default partition, (murmur2(key) & 0x7fffffff) % num_partitions, of
 * count keys laid end to end in blob (lens[i] bytes each, none null). */
int pl_partition_many(const uint8_t *blob, size_t blob_len, const int64_t *lens, size_t count,
                      int32_t num_partitions, int32_t *out);

/* ---- batch header ---- */
typedef struct {
    int64_t base_offset;
    int32_t partition_leader_epoch;
    int16_t attributes;
    int16_t producer_epoch;
    int64_t producer_id;
    int32_t base_sequence;
    /* The following are only used by pl_batch_wrap (computed by the encoders). */
    int32_t last_offset_delta;
    int64_t base_timestamp;
    int64_t max_timestamp;
    int32_t records_count;
} pl_batch_meta;

typedef struct {
    int64_t base_offset;
    int32_t batch_length;
    int32_t partition_leader_epoch;
    int32_t magic;
    uint32_t crc;
    int32_t attributes;
    int32_t last_offset_delta;
    int64_t base_timestamp;
    int64_t max_timestamp;
    int64_t producer_id;
    int32_t producer_epoch;
    int32_t base_sequence;
    int32_t records_count;
    int32_t crc_valid;      /* 1 if the stored CRC matches bytes 21..end (B-4) */
} pl_batch_header_out;

/* Parse the batch header at buf[pos:]; validates B-2, B-3 and computes the CRC
 * (B-4) into out->crc_valid without failing on a mismatch.  Returns 0 or a
 * PL_C_* code (fields are filled as far as they could be read). */
int pl_batch_header(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *out);
/* The header fields and framing (B-2, B-3) without the CRC (B-4): for walks
 * that skip a batch by its header (crc_valid stays 0). */
int pl_batch_framing(const uint8_t *buf, size_t len, size_t pos, pl_batch_header_out *out);

/* ---- encoding ----
 * Records are described either by pointer arrays (pl_*_encode) or by a
 * "packed" form (pl_*_encode_packed): one int64 stream with, per record,
 *   timestamp, key_len, value_len, headers_count, then headers_count pairs
 *   (header_key_len, header_value_len)
 * and one blob holding the non-null keys/values/header keys/header values
 * concatenated in that same order.  Lengths of -1 mean null (not allowed for
 * header keys).  Offset deltas are 0..n-1; n must be >= 1.
 * If the output does not fit in cap nothing is written, *written is set to the
 * needed size and PL_E_NOSPACE is returned (out may be NULL with cap 0).      */
int pl_batch_encode(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                    uint32_t n, const int64_t *timestamps,
                    const uint8_t *const *keys, const int64_t *key_lens,
                    const uint8_t *const *values, const int64_t *value_lens,
                    const int32_t *header_counts /* may be NULL */,
                    const uint8_t *const *hkeys, const int64_t *hkey_lens,
                    const uint8_t *const *hvals, const int64_t *hval_lens);
int pl_batch_encode_packed(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                           uint32_t n, const int64_t *stream, size_t stream_len,
                           const uint8_t *blob, size_t blob_len);
/* Records section only (e.g. to compress it); *max_ts_out receives the max timestamp. */
int pl_records_encode(uint8_t *out, size_t cap, size_t *written, int64_t base_timestamp,
                      int64_t *max_ts_out, uint32_t n, const int64_t *timestamps,
                      const uint8_t *const *keys, const int64_t *key_lens,
                      const uint8_t *const *values, const int64_t *value_lens,
                      const int32_t *header_counts,
                      const uint8_t *const *hkeys, const int64_t *hkey_lens,
                      const uint8_t *const *hvals, const int64_t *hval_lens);
int pl_records_encode_packed(uint8_t *out, size_t cap, size_t *written, int64_t base_timestamp,
                             int64_t *max_ts_out, uint32_t n, const int64_t *stream,
                             size_t stream_len, const uint8_t *blob, size_t blob_len);
/* Header (all meta fields used as given) + an already encoded/compressed
 * records section; CRC computed last. */
int pl_batch_wrap(uint8_t *out, size_t cap, size_t *written, const pl_batch_meta *meta,
                  const uint8_t *records, size_t records_len);

/* ---- decoding ----
 * out: PL_RECORD_FIELDS int64 per record (capacity: count records):
 *   offset_delta, timestamp_delta, key_off, key_len, value_off, value_len,
 *   header_index (index of the record's first header in hdr_out), headers_count
 * hdr_out: PL_HEADER_FIELDS int64 per header: key_off, key_len, value_off, value_len
 * Offsets are relative to recs; lengths -1 = null.  Validates R-1..R-7.
 * Returns 0, a PL_C_* code (*err_off = offset in recs of the failing record),
 * or PL_E_NOSPACE if hdr_cap was too small (everything validated; *hdr_total
 * holds the needed number of headers). out/hdr_out may be NULL (validate only). */
int pl_records_decode(const uint8_t *recs, size_t len, int32_t count, int32_t last_offset_delta,
                      int64_t *out, int64_t *hdr_out, size_t hdr_cap, size_t *hdr_total,
                      size_t *err_off);

/* Shape of decoded records (the `out` of pl_records_decode or the `fields`
 * of pl_fetch), so the Python layer can cut every key and value out of the
 * buffer with one struct.unpack call instead of one slice per field.
 * Writes into fmt (no terminator) a struct format that, applied at offset
 * `origin` of the buffer, yields each record's key (when want_keys) and then
 * its value, as "<gap>x<len>s" items; *fmt_len is its length.  *flags gets
 * PL_SHAPE_* bits (with want_keys and a null first key, every key must be
 * null: the format then holds values only, and PL_SHAPE_NULL_KEYS says so).
 * Returns 0, PL_E_NOSPACE when fmt_cap is too small, or
 * PL_E_INVAL when a wanted key or value is null (a struct cannot yield None;
 * the caller then slices field by field) or the fields are out of order. */
enum pl_shape {
    PL_SHAPE_DENSE_OFFSETS  = 1,  /* offset field of record i is record 0's + i */
    PL_SHAPE_SAME_TIMESTAMP = 2,  /* every timestamp field is record 0's        */
    PL_SHAPE_HEADERS        = 4,  /* some record has headers                    */
    PL_SHAPE_NULL_KEYS      = 8   /* want_keys, but every key is null:
                                     only the values are in the format          */
};
int pl_records_shape(const int64_t *fields, uint32_t count, int want_keys, int64_t origin,
                     char *fmt, size_t fmt_cap, size_t *fmt_len, uint32_t *flags);

/* ---- fetch: many batches of a segment in one call (P-2, B-*, R-*) ----
 * Reads the batches of seg[0:end] from byte `pos` (a batch boundary), where
 * the record with offset `expected` must be, and decodes the
 * records with offset >= expected into `fields`, PL_RECORD_FIELDS int64
 * each: offset, timestamp (absolute; maxTimestamp for log-append-time
 * batches), key position and length, value position and length (positions
 * in seg; length -1: null), first header index, header count; headers into
 * `hdrs` (PL_HEADER_FIELDS each, positions in seg).  Every batch is checked
 * (framing, magic, CRC) before its records are used.  Stops, with `out`
 * saying why (PL_FETCH_*), at `end`, after max_records records (also
 * before the next batch once soft_records are decoded: a caller building
 * objects from many records works in cache-sized steps), before a
 * batch whose records do not all fit in the fields left (fields_cap), a
 * compressed batch (the caller decompresses it), a corrupt one (out->error:
 * a PL_C_* code, at out->stop_position), or when hdrs is full.  out->position
 * and out->next_offset say where the next call continues.
 * Offsets are dense (B-4: baseOffset is outside the CRC, so this is what
 * catches a damaged one): every batch after the first starts at the offset
 * after the previous one; the first has baseOffset first_base, or when
 * first_base is -1 (unknown: the caller located `pos` through the sparse
 * index) it holds `expected`.  Anything else is PL_C_OFFSET_MISMATCH.
 * out->position_base is the baseOffset the batch at out->position has
 * (checked) or must have, for the next call's first_base (-1: unknown).
 * Returns 0 or PL_E_INVAL. */
enum pl_fetch_stop {
    PL_FETCH_END        = 0,
    PL_FETCH_FULL       = 1,  /* max_records returned                         */
    PL_FETCH_ROOM       = 2,  /* next batch has more records than fields left */
    PL_FETCH_COMPRESSED = 3,  /* batch at stop_position is compressed         */
    PL_FETCH_CORRUPT    = 4,  /* batch at stop_position is damaged: error     */
    PL_FETCH_HEADERS    = 5,  /* hdrs is full                                 */
    PL_FETCH_TXN        = 6,  /* transactional batch at stop_position (flag)  */
    PL_FETCH_LIMIT      = 7   /* batch at stop_position starts at stop_offset */
};
enum { PL_FETCH_STOP_TXN = 1 };
typedef struct {
    int64_t position;       /* next batch to read                              */
    int64_t next_offset;    /* offset the next call expects                    */
    int64_t records;        /* records decoded into fields                     */
    int64_t headers;        /* headers decoded into hdrs                       */
    int64_t stop_position;  /* batch the fetch stopped at (ROOM, COMPRESSED, CORRUPT) */
    int32_t stop;           /* PL_FETCH_*                                      */
    int32_t error;          /* PL_C_* when stop is PL_FETCH_CORRUPT            */
    int64_t error_offset;   /* byte of the records section the error is at     */
    int64_t position_base;  /* baseOffset of the batch at position, -1: unknown */
} pl_fetch_out;
int pl_fetch(const uint8_t *seg, size_t end, size_t pos, int64_t expected, int64_t first_base,
             uint32_t max_records, uint32_t soft_records, int64_t *fields, size_t fields_cap,
             int64_t *hdrs, size_t hdr_cap, pl_fetch_out *out);
/* pl_fetch that also stops (PL_FETCH_LIMIT) at a batch whose baseOffset is at
 * or past stop_offset, and with PL_FETCH_STOP_TXN in flags at a transactional
 * batch (PL_FETCH_TXN). Both skip control batches. */
int pl_fetch_txn(const uint8_t *seg, size_t end, size_t pos, int64_t expected,
                 int64_t first_base, uint32_t max_records, uint32_t soft_records,
                 int64_t *fields, size_t fields_cap, int64_t *hdrs, size_t hdr_cap,
                 pl_fetch_out *out, int64_t stop_offset, int32_t flags);

/* ---- segment scan ---- */
typedef struct {
    int64_t end_position;          /* end of the last valid batch              */
    int64_t next_offset;           /* last offset + 1 (expected_offset if none)*/
    int64_t max_timestamp;         /* max over scanned batches and the input   */
    int64_t batch_count;
    int64_t error_position;        /* -1 if clean                              */
    int32_t error_reason;          /* 0 clean, else PL_C_*                     */
    int32_t continues_after_error; /* valid batch follows the bad one          */
    int64_t bytes_since_last_entry;
    int32_t capacity_stop;         /* 1: stopped because entry_cap was reached */
    int32_t _pad;
} pl_scan_out;

/* Walk batches from start_pos.  Index entries are emitted for a batch when
 * bytes_since_last_entry >= index_interval_bytes *before* counting the batch;
 * the counter is then reset to 0 and the batch's size added (Kafka's rule).
 * idx_out: 2 int32 per entry (relative last offset, batch position);
 * tidx_out: 2 int64 per entry (max timestamp so far, relative last offset).
 * Returns the number of entries written, or PL_E_INVAL. */
int pl_segment_scan(const uint8_t *buf, size_t len, size_t start_pos, int64_t expected_offset,
                    int64_t segment_base_offset, int64_t index_interval_bytes,
                    int64_t bytes_since_last_entry, int64_t max_timestamp_in,
                    int32_t *idx_out, int64_t *tidx_out, size_t entry_cap, pl_scan_out *out);

/* ---- offset / time index ---- */
int pl_index_lookup(const uint8_t *idx, size_t len, int32_t target_rel, int32_t *rel_out,
                    int32_t *pos_out);                 /* 0 found, 1 none */
int64_t pl_index_validate(const uint8_t *idx, size_t len, int64_t segment_size);
int pl_timeindex_lookup(const uint8_t *tidx, size_t len, int64_t target_ts, int64_t *ts_out,
                        int32_t *rel_out);             /* 0 found, 1 none */
int64_t pl_timeindex_validate(const uint8_t *tidx, size_t len);

/* ---- partition state seqlock (PL_STATE_SIZE bytes, native byte order,
 * 8-aligned; FORMAT.rst P-2) ----
 * off 0 uint32 magic (PL_STATE_MAGIC), 4 uint32 version, 8 uint64 seq,
 * 16 next_offset, 24 active_base_offset, 32 active_position,
 * 40 active_max_timestamp, 48 layout_generation, 56 log_start_offset.
 * vals[6] are the six fields from offset 16 on, in that order. */
int pl_state_publish(void *state, const int64_t vals[6]);
int pl_state_read(const void *state, int64_t vals_out[6], uint64_t *seq_out);
int pl_state_repair(void *state);

/* ---- doorbell: struct { uint32 seq; uint32 waiters; } (4-aligned) ---- */
int pl_doorbell_ring(void *slot);
uint32_t pl_doorbell_load(const void *slot);
int pl_doorbell_wait(void *slot, uint32_t expected, int64_t timeout_us); /* 0 changed, 1 timeout, -errno */
/* A watcher's wait on a slot (an event loop's bridge thread), w[2] its
 * words (interest, armed; zeroed to start): pl_doorbell_wait, except that
 * it returns for a ring only while w[0] (interest) is set, sleeping
 * through the others; 0 when it rang with interest, 1 on timeout, -errno.
 * pl_watch_set(w, slot, on) sets the interest; off also takes the watcher
 * out of the slot's waiters count while it sleeps, so a ring then costs
 * no futex wake; on puts it back before returning. 0, or PL_E_INVAL. */
int pl_doorbell_watch(void *slot, uint32_t expected, uint32_t *w, int64_t timeout_us);
int pl_watch_set(uint32_t *w, void *slot, uint32_t on);

/* ---- the poll path of a reader of one partition: wait, then fetch ----
 * pl_doorbell_wait(slot, expected, timeout_us), counted in *waiting (when
 * not NULL: pl_appender.handoff[1] of the partition's appenders) while it
 * waits; once woken, reads the partition state (the 64-byte seqlock) and,
 * when its active segment is seg_base, mapped at seg[0:seg_len], and it
 * committed records from offset `next` on (byte `pos`, first_base as for
 * pl_fetch), decodes them with pl_fetch(seg, active_position, pos, next,
 * first_base, max_records, soft_records, fields, fields_cap, hdrs,
 * hdr_cap, out), without a return to the interpreter in between.
 * Returns PL_WAIT_FETCHED (out says what was decoded), PL_WAIT_WOKEN (woken,
 * nothing decoded: the segment rolled or grew past the map, the state was
 * busy, the log start passed `next`, or nothing new for this partition),
 * PL_WAIT_TIMEOUT, PL_E_INVAL for a bad argument (a misaligned slot too), or
 * else -errno of the futex wait. */
enum pl_wait_result { PL_WAIT_WOKEN = 0, PL_WAIT_TIMEOUT = 1, PL_WAIT_FETCHED = 2 };
typedef struct {
    /* what to wait on */
    void *slot;              /* doorbell slot (4-aligned)                      */
    uint32_t *waiting;       /* counted in while waiting, or NULL              */
    uint32_t expected;       /* the slot's seq the caller saw                  */
    uint32_t max_records;
    int64_t timeout_us;      /* -1: no timeout                                 */
    const void *state;       /* the partition's mapped state                   */
    /* where the reader is */
    int64_t seg_base;        /* base offset of the mapped segment              */
    const uint8_t *seg;
    size_t seg_len;
    size_t pos;              /* byte of the record with offset `next`          */
    int64_t next;
    int64_t first_base;      /* as for pl_fetch                                */
    /* where the records go (as for pl_fetch) */
    uint32_t soft_records;
    uint32_t reserved;
    int64_t *fields;
    size_t fields_cap;
    int64_t *hdrs;
    size_t hdr_cap;
} pl_wait_fetch_req;
int pl_wait_fetch(const pl_wait_fetch_req *req, pl_fetch_out *out);

/* ---- per-partition counters in partition.state (FORMAT.rst P-10, P-11) ----
 * uint64 words in native byte order, 0 in a new state file, never reset
 * by pylog: records and bytes appended (written by append lock holders
 * only, P-3: plain stores), fetches and records fetched (atomic adds by
 * any process), fdatasyncs of the partition's segments with their total
 * and a histogram of their latency (atomic adds). Each group of words has
 * a cache line of its own, so readers counting fetches never touch the
 * line appenders write. pl_counters_read copies PL_CTR_WORDS words in
 * this order: batches, records, bytes appended; fetches, records fetched;
 * fsyncs, fsync ns; PL_CTR_FSYNC_NBUCKETS bucket counts. Bucket 0 counts
 * fsyncs under 2**PL_CTR_FSYNC_BUCKET0_LOG2 ns, bucket k the next doubling
 * (under 2**(PL_CTR_FSYNC_BUCKET0_LOG2 + k) ns), the last one everything
 * longer. Each returns 0 or PL_E_INVAL (a NULL or misaligned state). */
enum pl_counters_layout {
    PL_CTR_APPEND_BATCHES     = 144,
    PL_CTR_APPEND_RECORDS     = 152,
    PL_CTR_APPEND_BYTES       = 160,
    PL_CTR_FETCHES            = 192,
    PL_CTR_FETCH_RECORDS      = 200,
    PL_CTR_FSYNCS             = 256,
    PL_CTR_FSYNC_NS           = 264,
    PL_CTR_FSYNC_BUCKETS      = 272,
    PL_CTR_FSYNC_NBUCKETS     = 16,
    PL_CTR_FSYNC_BUCKET0_LOG2 = 16,   /* bucket 0: under 65,536 ns */
    PL_CTR_END                = 400,  /* PL_CTR_FSYNC_BUCKETS + 8 * 16 */
    PL_CTR_WORDS              = 23
};
#ifndef PL_CDEF
_Static_assert(PL_CTR_APPEND_BATCHES >= PL_STATE_LOCK_WORD + 8, "after the lock word");
_Static_assert(PL_CTR_END == PL_CTR_FSYNC_BUCKETS + 8 * PL_CTR_FSYNC_NBUCKETS, "P-11");
_Static_assert(PL_CTR_WORDS == 7 + PL_CTR_FSYNC_NBUCKETS, "pl_counters_read");
#endif
/* One append of `records` records in `bytes` bytes; for the append lock's
 * holder (pl_append_* count their own). */
int pl_count_append(void *state, int64_t records, int64_t bytes);
/* One fetch that returned `records` records to a consumer. */
int pl_count_fetch(void *state, int64_t records);
/* One fdatasync of a segment of the partition that took `ns`. */
int pl_count_fsync(void *state, int64_t ns);
int pl_counters_read(const void *state, uint64_t *out);

/* ---- byte-range locks: mode 0 unlock, 1 shared, 2 exclusive ---- */
int pl_lock(int fd, int64_t start, int64_t len, int mode, int wait);

/* ---- one-call append (FORMAT.rst P-2, P-3, I-2, L-3) ----
 * Under the partition's append lock (see below; token 0 when the caller
 * already holds it): read the state, encode the batch (base offset = the
 * state's next offset) straight into the mapped
 * active segment at the committed position, publish the new end, append the
 * sparse index entries when due, unlock, ring the doorbell slots.
 * Returns 0, PL_APPEND_INDEX_FAILED (appended, but the sparse index entry
 * could not be written: out.index_errno; indexes are derived data, I-3),
 * PL_E_NOSPACE (out->size = needed bytes; nothing written),
 * PL_E_STALE (the state names another active segment, or is not initialised:
 * the caller remaps and retries), PL_E_DELETED, another PL_E_* or -errno.
 * PL_E_STALE too, with nothing written, while the word at PL_STATE_TAKEOVER
 * is set: the lock was taken over from a dead holder whose leftovers past
 * the published end must be cleaned up first (FORMAT.rst P-3), by the
 * caller under the lock, which then clears the word.
 * The int64 at byte PL_STATE_INDEX_POSITION of the state file is the position
 * of the batch of the active segment's last index entry (0 when none);
 * only lock holders read or write it. */
enum pl_append_consts {
    PL_APPEND_INDEX_FAILED    = 1,    /* appended; out.index_errno: no index entry */
    /* Batches this long or longer are written with pwrite from the
     * appender's scratch rather than encoded into the map (append_locked). */
    PL_APPEND_WRITE_BYTES_MIN = 4096
};

typedef struct {
    int64_t base_offset;    /* offset of the batch's first record          */
    int64_t position;       /* byte position of the batch in the segment   */
    int64_t size;           /* bytes written (or needed, with NOSPACE)     */
    int64_t next_offset;    /* state after the call                        */
    int64_t active_base;
    int64_t max_timestamp;
    int64_t generation;
    int64_t log_start;
    int32_t index_written;  /* 1 if an index entry was appended            */
    int32_t index_errno;    /* errno of a failed index write (derived data) */
} pl_append_out;

/* What one writer of one partition appends through: set by the caller when
 * the writer's segment is (re)mapped, read by every append; the append
 * functions write only `out` and the written_* fields.  Not thread-safe: one
 * appender per writer, used under the writer's in-process lock.
 * lock_token 0: the caller already holds the append lock. */
typedef struct {
    void *state;             /* mapped partition.state                      */
    uint8_t *seg;            /* writable map of the active segment          */
    uint64_t seg_cap;        /* its length                                  */
    int64_t seg_base;        /* its base offset                             */
    int64_t index_interval;  /* I-2: bytes between sparse index entries     */
    void *bell;              /* mapped doorbell file, or NULL               */
    uint32_t slot;           /* doorbell slot of the topic (L-3)            */
    uint32_t lock_token;
    int32_t live_fd;
    int32_t state_fd;
    int32_t index_fd;
    int32_t timeindex_fd;
    int32_t seg_fd;          /* the active segment's descriptor, or -1      */
    int32_t reserved;
    uint8_t *scratch;        /* the packed and columns forms encode a batch */
    uint64_t scratch_cap;    /*   of PL_APPEND_WRITE_BYTES_MIN or more here */
                             /*   and pwrite it to seg_fd; set before each  */
                             /*   such call (NULL: through the map)         */
    int64_t written_base;    /* segment base and end of the last batch      */
    int64_t written_end;     /*   appended through this appender,           */
    int64_t written_next;    /*   and the next offset after it              */
    /* This process's readers of the partition blocked in pl_wait_fetch, or
     * NULL: handoff[1] of them are waiting, and handoff[0] counts hand-offs
     * (a woken reader bumps it once it holds the GIL). After a ring with
     * such a reader waiting, when the previous ring of this appender ended
     * hold_gap_ns or more before (a sparse stream, not a busy producer), the
     * append returns only once a reader holds the GIL, or after hold_max_ns
     * (0: never holds).  last_ring_ns: monotonic time of the last ring. */
    uint32_t *handoff;
    int64_t hold_max_ns;
    int64_t hold_gap_ns;
    int64_t last_ring_ns;
    pl_append_out out;
    /* with producer_set non-zero, the batches carry these producer
     * fields and attribute bits; else B-1's -1s */
    int64_t producer_id;
    int32_t base_sequence;
    int16_t producer_epoch;
    int16_t producer_attributes;
    int32_t producer_set;
    int32_t reserved2;
} pl_appender;

/* The packed form (as pl_batch_encode_packed). */
int pl_append_packed(pl_appender *a, uint32_t n, const int64_t *stream, size_t stream_len,
                     const uint8_t *blob, size_t blob_len);
/* Columns: n records without headers sharing `timestamp`.  Keys are cut in
 * order from the `keys` blob, by key_lens[i], or when key_lens is NULL all
 * by key_len (-1: every key is null); values likewise. */
int pl_append_columns(pl_appender *a, uint32_t n, int64_t timestamp,
                      const int32_t *key_lens, int64_t key_len, const uint8_t *keys,
                      size_t keys_len, const int32_t *value_lens, int64_t value_len,
                      const uint8_t *values, size_t values_len);
/* As pl_append_columns, record i with timestamps[i]. */
int pl_append_columns_ts(pl_appender *a, uint32_t n, const int64_t *timestamps,
                         const int32_t *key_lens, int64_t key_len, const uint8_t *keys,
                         size_t keys_len, const int32_t *value_lens, int64_t value_len,
                         const uint8_t *values, size_t values_len);
/* One record without headers; a length of -1 is a null key or value.
 * Returns the record's offset (>= 0; the per-record hot path reads no
 * struct field), PL_E_APPENDED_NO_INDEX (appended at out.base_offset, but
 * out.index_errno says why no index entry was written) or a negative
 * status as above. */
int64_t pl_append_record(pl_appender *a, int64_t timestamp, const uint8_t *key,
                         int64_t key_len, const uint8_t *value, int64_t value_len);
/* As pl_append_record, with one header; a header value length of -1 is
 * a null value. */
int64_t pl_append_record_h1(pl_appender *a, int64_t timestamp, const uint8_t *key,
                            int64_t key_len, const uint8_t *value, int64_t value_len,
                            const uint8_t *hkey, int64_t hkey_len, const uint8_t *hval,
                            int64_t hval_len);

/* ---- group commit (G1 with sync="always") ----
 * One per writable partition per process; thread-safe.  A caller that
 * appended records up to offset target_next - 1 through appender `a` calls
 * pl_sync_through, which returns once they are durable: one caller at a
 * time leads and runs fdatasync on (a dup of) the syncer's segment fd,
 * covering every append published before the sync began (a->written_next
 * read first); the others sleep, without the GIL (cffi releases it), and
 * the first one not covered leads the next sync.  Records below the active
 * segment's base are durable since its roll (S-4): pl_syncer_set_fd
 * switches to a new active segment and marks them so.  A failed fdatasync
 * is sticky: every later call returns its -errno (or PL_E_VANISHED).
 * PL_E_NOFD is not: no descriptor could be had for the sync (EMFILE...),
 * nothing was lost, this call fails and the next one tries again.
 * PL_E_STALE: there is no segment to sync (pl_syncer_set_fd(-1): the
 * partition was closed).
 * After each successful fdatasync the leader records the durable mark
 * (FORMAT.rst P-7) in a->state: the end the state published before the
 * sync began, when its active segment is the syncer's. */
typedef struct pl_syncer pl_syncer;
pl_syncer *pl_syncer_new(void);
void pl_syncer_free(pl_syncer *s);
/* Sync `fd` (dup'd; -1: none) from now on; offsets below durable_next are
 * durable.  `path` (NULL: no check) is the file's path: after each
 * fdatasync the leader checks that the file is still linked and that `path`
 * still names it (same st_dev/st_ino), so a segment whose file or
 * directory was deleted, moved or replaced fails the sync with the sticky
 * PL_E_VANISHED instead of acknowledging records nobody will find
 * (FORMAT.rst L-6).  Returns 0 or -errno (of dup). */
int pl_syncer_set_fd(pl_syncer *s, int fd, int64_t durable_next, const char *path);
int pl_sync_through(pl_syncer *s, const pl_appender *a, int64_t target_next);

/* ---- the partition append lock (FORMAT.rst P-3) ----
 * A futex word in partition.state (uint32 at PL_STATE_LOCK_WORD: 0 free, else
 * the holder's token; uint32 waiter count after it): taking and dropping it
 * costs no syscall when uncontended. A token is a random non-zero 31-bit
 * number per open Log, whose liveness is an OFD read lock the Log holds on
 * byte PL_LIVENESS_BASE + token of pylog.lock (live_fd): the kernel drops it
 * when the process dies, so a waiter that finds the holder's liveness lock
 * gone takes the lock over (return 1) and never wedges behind a SIGKILLed
 * writer. Without OFD locks (not Linux) the lock is a classic fcntl write
 * lock on byte 0 of state_fd.
 * pl_plock_acquire returns 0 (taken), 1 (taken over from a dead holder),
 * PL_E_BUSY (held, and wait == 0) or -errno. A takeover also sets the
 * uint32 at PL_STATE_TAKEOVER to 1: whoever next appends cleans up what the
 * dead holder left past the published end, then stores 0 (P-3). */

int pl_plock_acquire(void *state, uint32_t token, int live_fd, int state_fd, int wait);
int pl_plock_release(void *state, uint32_t token, int state_fd);
int pl_liveness_lock(int live_fd, uint32_t token); /* take this Log's liveness lock */

/* ---- the commit table (FORMAT.rst C-*, csrc/cursor.c) ----
 * meta/cursors: a PL_CUR_HEADER-byte header (written by pylog/cursors.py),
 * then slots of PL_CUR_SLOT bytes, native byte order: uint32 lock word
 * (holder's Log token, as the append lock), uint32 waiters, uint64 seq
 * (seqlock: odd while written), uint64 key (hash of the offsets key, 0:
 * free), uint64 fence (owner's member hash, 0: none), int64 offset, int64
 * commit ms, uint64 ckpt_seq (seq last checkpointed to LMDB).
 * base must be 64-byte aligned and map_len the bytes mapped; the lock and
 * liveness arguments are those of pl_plock_acquire (fd: the table's, for the
 * fcntl fallback). A caller serializes its own threads per Log. */
enum pl_cursor_layout {
    PL_CUR_HEADER     = 4096,
    PL_CUR_SLOT       = 64,
    PL_CUR_OFF_LOCK   = 0,
    PL_CUR_OFF_SEQ    = 8,
    PL_CUR_OFF_KEY    = 16,
    PL_CUR_OFF_FENCE  = 24,
    PL_CUR_OFF_OFFSET = 32,
    PL_CUR_OFF_MS     = 40,
    PL_CUR_OFF_CKPT   = 48,
    /* pl_cur_set's what */
    PL_CUR_CLAIM      = 1, /* key differs: take the slot with offset/ms as checkpointed */
    PL_CUR_FENCE      = 2, /* set the fence */
    PL_CUR_STORE      = 4, /* store offset/ms (a commit) */
    PL_CUR_CLEAR      = 8, /* free the slot */
    /* pl_cur_dirty's seq of a slot to pl_cur_repair (a real seq is >= 0) */
    PL_CUR_SEQ_BAD    = -1
};

/* Store a commit: 0 (*seq_out: its seq), PL_E_STALE (the slot holds another
 * key: claim it first), PL_E_FENCED (fence != 0 and the slot's differs). */
int pl_cur_commit(void *base, uint64_t map_len, uint32_t idx, uint32_t token, int live_fd,
                  int fd, uint64_t key, uint64_t fence, int64_t offset, int64_t ms,
                  uint64_t *seq_out);
/* Apply ``what`` (PL_CUR_* bits, in the order claim, fence, store; clear
 * alone): 1 when it claimed, 0, PL_E_STALE (another key, no claim asked). */
int pl_cur_set(void *base, uint64_t map_len, uint32_t idx, uint32_t token, int live_fd, int fd,
               uint64_t key, int what, uint64_t fence, int64_t offset, int64_t ms);
/* Lock-free read: out = offset, ms, seq, ckpt_seq, fence. 0, PL_E_STALE
 * (another key), PL_E_BUSY (the seq stayed odd for a bounded spin: a writer
 * still publishing, or one that died doing it), PL_E_DAMAGED (C-7: values no
 * writer stores; pl_cur_repair empties the slot). */
int pl_cur_read(const void *base, uint64_t map_len, uint32_t idx, uint64_t key, int64_t out[5]);
/* Slots from ``from`` whose seq is past their ckpt_seq, at most ``max``:
 * idx_out[i] and vals_out[4i..4i+3] = key, offset, ms, seq. A slot that is
 * busy or damaged (pl_cur_read's PL_E_BUSY, PL_E_DAMAGED) is listed too,
 * with seq PL_CUR_SEQ_BAD, for the caller to pl_cur_repair. Returns the
 * count. A slot costs two loads when clean, a bounded spin at most. */
int pl_cur_dirty(const void *base, uint64_t map_len, uint32_t from, uint32_t *idx_out,
                 int64_t *vals_out, uint32_t max);
/* ckpt_seq = max(ckpt_seq, seq), never past the slot's seq (a slot emptied
 * since the caller read it keeps its own): the value of ``seq`` reached LMDB. */
int pl_cur_mark(void *base, uint64_t map_len, uint32_t idx, uint64_t seq);
/* C-7: take the slot's lock (waiting for a live holder only when ``wait``;
 * a dead one is taken over), close a seq left odd, and empty the slot (every
 * field 0: free, C-2) when it holds values no writer stores, or always when
 * ``empty``. 1 when emptied, 0 when sound, PL_E_BUSY (a live holder, wait 0). */
int pl_cur_repair(void *base, uint64_t map_len, uint32_t idx, uint32_t token, int live_fd,
                  int fd, int wait, int empty);

#endif /* PYLOG_NATIVE_H */

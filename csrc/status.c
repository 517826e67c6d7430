/* Status and corruption reason strings (pl_reason_str). */
#include "internal.h"

/* ------------------------------------------------------------------ */
/* reasons                                                             */
/* ------------------------------------------------------------------ */

static const char *const reason_strs[PL_C_MAX + 1] = {
    "ok",
    "batch header truncated: fewer than 12 bytes left (B-2)",
    "batchLength below the 49-byte minimum (B-2)",
    "batch extends past the end of the buffer (B-2)",
    "magic byte is not 2 (B-3)",
    "CRC32C mismatch (B-4)",
    "baseOffset is not the expected next offset",
    "batch offsets outside the segment's int32 relative range",
    "varint unterminated or longer than 5/10 bytes (R-1)",
    "length field below -1 or beyond the end of the record (R-2)",
    "parsed record size differs from its length field (R-3)",
    "records do not end exactly at the end of the records section (R-4)",
    "number of records differs from recordsCount (R-5)",
    "offsetDelta not strictly increasing within [0, lastOffsetDelta] (R-6)",
    "negative headersCount (R-7)",
    "negative lastOffsetDelta or recordsCount",
    "batch position does not fit in an int32 index entry",
    "batch holds no records (B-5)",
};

const char *pl_reason_str(int code)
{
    if (code >= 0 && code <= PL_C_MAX)
        return reason_strs[code];
    switch (code) {
    case PL_E_NOSPACE: return "output buffer too small";
    case PL_E_INVAL: return "invalid argument";
    case PL_E_BUSY: return "state busy (writer died mid-publish?)";
    case PL_E_STALE: return "the partition state names another active segment";
    case PL_E_DELETED: return "the partition was deleted (P-2)";
    case PL_E_APPENDED_NO_INDEX: return "appended, but no index entry was written (I-3)";
    case PL_E_VANISHED: return "the synced file is no longer at its path (L-6)";
    case PL_E_NOFD: return "no file descriptor left for the fdatasync";
    case PL_E_FENCED: return "another group member owns the commit slot";
    case PL_E_DAMAGED: return "the commit slot holds values no writer stores (C-7)";
    default: return "unknown status";
    }
}

/* server._jsonkeys: does any object of a JSON text hold the same key twice?
 *
 * orjson decodes the caller's order and appointment JSON fast, but keeps the last of two
 * equal keys without saying so. server/facts.py asks scan() about the text orjson has just
 * accepted. Only when the answer is "a duplicate" or "unsure" does it take the exact path:
 * decode the text again keeping every key, find the key, and refuse it if the policy reads it.
 * So correctness never depends on this module: it only has to say "unique" only when that is
 * true.
 *
 * How: one pass over the UTF-8 text, with a stack of the open containers and one array of the
 * keys of every open object (where the key starts in the text, its length, a cheap hash). The
 * first INLINE_KEYS entries live on the C stack; beyond that the array grows on the heap, up to
 * MAX_OPEN_KEYS. There is no allocation per key. A new key is compared with the keys of its
 * own object only (hash first, then length and memcmp), and only when a 128-bit filter of the
 * object's key hashes says it may be there; when an object closes, its keys are dropped. Keys
 * are compared as UTF-8 bytes, which is exact for keys without escapes. A key holding a
 * backslash escape ("st\u0061tus" spells `status`) makes the answer "unsure", and so does
 * exceeding any bound below.
 *
 * Strings are skipped 16 bytes at a time with SSE2 (every x86-64), else 8 at a time with bit
 * tricks on a word. JSONKEYS_NO_SSE2 and JSONKEYS_NO_LITTLE_ENDIAN turn the faster variants
 * off, so the tests can check the portable ones on this machine too.
 *
 * The scan checks the whole JSON grammar (RFC 8259: structure, literals, numbers, string
 * escapes, UTF-8 of bytes), so a text that is not JSON answers "unsure", never "unique". It is
 * meant for text a decoder already accepted, but it is safe on any input: it never reads past
 * the end of the text. INVARIANT: the byte at `end` is readable and is NUL, as CPython
 * guarantees for the buffer of a bytes object and for the UTF-8 form of a str; NUL is neither
 * blank, nor a structural character, nor a digit, nor allowed in a string, so the byte-by-byte
 * loops stop there without comparing with `end`. Reads of more than one byte (16-byte blocks,
 * literals, UTF-8 sequences, escapes, key words) check `end` first.
 *
 * Thread safety: no global or static mutable state. The caller holds the GIL, and the text (a
 * str or bytes, both immutable) stays alive for the whole call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Containers open at once. Orders nest 3-4 levels; deeper text is answered "unsure" (the
 * caller's other checks then decide), and the stack of open containers stays 6 KB of the C
 * stack. */
#define MAX_DEPTH 256
/* Keys of one object. Comparison is linear within the object, so the worst case is
 * MAX_OBJECT_KEYS^2 / 2 hash comparisons (32,768; some microseconds). Order objects hold
 * tens of keys; a larger one is answered "unsure". */
#define MAX_OBJECT_KEYS 256
/* Keys kept on the C stack before the array moves to the heap (24 bytes each: 1.5 KB). */
#define INLINE_KEYS 64
/* Keys of all open objects together: the heap array never exceeds 4,096 * 24 bytes = 96 KB.
 * A power of two times INLINE_KEYS, so doubling reaches it exactly. */
#define MAX_OPEN_KEYS 4096

enum answer { UNIQUE, DUPLICATE, UNSURE };

typedef struct {
    const unsigned char *start; /* the key's first byte after its opening quote */
    Py_ssize_t len;             /* bytes up to its closing quote */
    uint32_t hash;
} Key;

typedef struct {
    Key *items; /* inline_items, or a heap array of `capacity` keys */
    Py_ssize_t count;
    Py_ssize_t capacity;
    Key inline_items[INLINE_KEYS];
} Keys;

/* One open container. */
typedef struct {
    Py_ssize_t first;  /* index in Keys of the object's first key; -1 for an array */
    uint64_t seen[2];  /* a bit per key hash seen in the object (128 bits): a new key whose bit
                        * is clear is surely new, so most keys skip the comparisons */
} Frame;

/* What a byte means inside a string. */
enum { PLAIN, QUOTE, BACKSLASH, CONTROL, HIGH };

static const unsigned char STRING_CLASS[256] = {
    /* 0x00-0x1f: a raw control character is not allowed in a JSON string */
    CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL,
    CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL,
    CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL,
    CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL,
    /* 0x20-0x7f: plain, except the quote (0x22) and the backslash (0x5c) */
    PLAIN, PLAIN, QUOTE, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, BACKSLASH, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN, PLAIN,
    /* 0x80-0xff: part of a multi-byte UTF-8 sequence, checked by utf8_length */
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
    HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH,
};

static inline int
is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* The length of the well-formed UTF-8 sequence at p (Unicode table 3-7: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or 0 when it is not one or is cut by the end. */
static Py_ssize_t
utf8_length(const unsigned char *p, const unsigned char *end)
{
    Py_ssize_t left = end - p;
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        return left >= 2 && is_cont(p[1]) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || !is_cont(p[1]) || !is_cont(p[2])) {
            return 0;
        }
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F)) {
            return 0; /* overlong, or a surrogate */
        }
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || !is_cont(p[1]) || !is_cont(p[2]) || !is_cont(p[3])) {
            return 0;
        }
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F)) {
            return 0; /* overlong, or above U+10FFFF */
        }
        return 4;
    }
    return 0;
}

static inline long
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The UTF-16 code unit spelled by the 4 hex digits at p (all readable), or -1. */
static long
hex4(const unsigned char *p)
{
    long unit = 0;
    for (int i = 0; i < 4; i++) {
        long digit = hex_digit(p[i]);
        if (digit < 0) {
            return -1;
        }
        unit = unit * 16 + digit;
    }
    return unit;
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

#define ONES 0x0101010101010101ULL
#define HIGH_BITS 0x8080808080808080ULL

/* The high bit of each byte of `v` that is a quote, a backslash, below 0x20 or above 0x7f (bit
 * tricks on a word). A borrow can wrongly flag a byte, but only one above a byte rightly
 * flagged: so "any" is exact, and so is the lowest flagged byte. */
static inline uint64_t
special_bytes(uint64_t v)
{
    uint64_t quote = v ^ (ONES * '"');
    uint64_t backslash = v ^ (ONES * '\\');
    return (((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash) | (v - ONES * 0x20) | v) & HIGH_BITS;
}

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ \
    && !defined(JSONKEYS_NO_LITTLE_ENDIAN)
#define USE_LITTLE_ENDIAN 1
/* On a little-endian machine the lowest flagged byte is the first in the text. */
#define FIRST_FLAGGED(mask) ((Py_ssize_t)(__builtin_ctzll(mask) >> 3))
#endif

#if defined(__SSE2__) && defined(__GNUC__) && !defined(JSONKEYS_NO_SSE2)
#define USE_SSE2 1
#include <emmintrin.h>
/* Every x86-64 has SSE2: 16 bytes at a time. A signed compare with 0x20 catches both the
 * control characters (0x00-0x1f) and the bytes above 0x7f (negative as signed). */
static inline const unsigned char *
skip_plain16(const unsigned char *p, const unsigned char *end)
{
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                   _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0) {
            return p + __builtin_ctz((unsigned)mask);
        }
        p += 16;
    }
    return p;
}
#endif

/* Skip the rest of a string whose opening quote was just passed. Returns the position after
 * the closing quote, or NULL when the string is not valid JSON or the text ends inside it.
 * Sets *escaped when the string holds a backslash escape. */
static ALWAYS_INLINE const unsigned char *
skip_string(const unsigned char *p, const unsigned char *end, int *escaped)
{
    for (;;) {
        /* 16 or 8 bytes at a time while they are plain; then byte by byte to the one that is not */
#ifdef USE_SSE2
        p = skip_plain16(p, end);
#else
        while (end - p >= 8) {
            uint64_t word;
            memcpy(&word, p, 8);
            uint64_t special = special_bytes(word);
            if (special != 0) {
#ifdef FIRST_FLAGGED
                p += FIRST_FLAGGED(special);
#endif
                break;
            }
            p += 8;
        }
#endif
        while (STRING_CLASS[*p] == PLAIN) { /* the NUL at `end` is CONTROL: it stops the loop */
            p++;
        }
        switch (STRING_CLASS[*p]) {
        case QUOTE:
            return p + 1;
        case BACKSLASH:
            *escaped = 1;
            if (end - p < 2) {
                return NULL;
            }
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                break;
            case 'u': {
                /* as the decoders do: a high surrogate only with a low one after it, never a
                 * low one alone */
                long unit = end - p >= 6 ? hex4(p + 2) : -1;
                p += 6;
                if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) {
                    return NULL;
                }
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    long low = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2) : -1;
                    if (low < 0xDC00 || low > 0xDFFF) {
                        return NULL;
                    }
                    p += 6;
                }
                break;
            }
            default:
                return NULL;
            }
            break;
        case HIGH: {
            Py_ssize_t n = utf8_length(p, end);
            if (n == 0) {
                return NULL;
            }
            p += n;
            break;
        }
        default: /* CONTROL */
            return NULL;
        }
    }
}

/* A number every decoder reads alike: at most this many digits before the exponent (a
 * 64-bit integer has up to 19 digits, and decoders differ on larger ones: a float or an exact
 * integer) and at most this many exponent digits (1e309 and beyond overflow a double, which
 * some decoders refuse). Longer numbers answer unsure, so a caller never trusts a shortcut
 * for a document that decoders could read differently. */
#define MAX_EXACT_DIGITS 18
#define MAX_EXPONENT_DIGITS 2

/* Skip `true`, `false`, `null` or a number (RFC 8259 grammar). Returns the position after it,
 * or NULL when p holds none of them, or a number longer than the bounds above. What follows
 * is checked by the caller. */
static const unsigned char *
skip_scalar(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *digits;
    Py_ssize_t left = end - p;
    if (left >= 4 && (memcmp(p, "true", 4) == 0 || memcmp(p, "null", 4) == 0)) {
        return p + 4;
    }
    if (left >= 5 && memcmp(p, "false", 5) == 0) {
        return p + 5;
    }
    /* byte by byte from here: the NUL at `end` is no digit, sign, point or exponent */
    if (*p == '-') {
        p++;
    }
    digits = p;
    if (*p == '0') {
        p++;
    }
    else if (*p >= '1' && *p <= '9') {
        while (is_digit(*p)) {
            p++;
        }
    }
    else {
        return NULL;
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p)) {
            return NULL;
        }
        while (is_digit(*p)) {
            p++;
        }
        if (p - digits - 1 > MAX_EXACT_DIGITS) { /* the point is no digit */
            return NULL;
        }
    }
    else if (p - digits > MAX_EXACT_DIGITS) {
        return NULL;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (!is_digit(*p)) {
            return NULL;
        }
        digits = p;
        while (is_digit(*p)) {
            p++;
        }
        if (p - digits > MAX_EXPONENT_DIGITS) {
            return NULL;
        }
    }
    return p;
}

/* A cheap hash of a key: its length, its first 8 and last 8 bytes (all of a short key),
 * mixed by multiplication. Keys that differ only in between collide, and memcmp tells them
 * apart. Equal keys always hash equal: only the key's own bytes count. */
static inline uint32_t
key_hash(const unsigned char *p, Py_ssize_t len, const unsigned char *end)
{
    uint64_t h = (uint64_t)len * 0x9E3779B97F4A7C15ULL;
    if (len >= 8) {
        uint64_t head, tail;
        memcpy(&head, p, 8);
        memcpy(&tail, p + len - 8, 8);
        h = (h ^ head) * 0xFF51AFD7ED558CCDULL;
        h ^= tail;
    }
#ifdef USE_LITTLE_ENDIAN
    else if (end - p >= 8) {
        /* one load, the bytes past the key masked off (they are the low `len` bytes here) */
        uint64_t word;
        memcpy(&word, p, 8);
        h ^= word & (len == 0 ? 0 : ~0ULL >> (64 - 8 * len));
    }
#endif
    else {
        for (Py_ssize_t i = 0; i < len; i++) {
            h ^= (uint64_t)p[i] << (8 * i);
        }
    }
    h *= 0xC4CEB9FE1A85EC53ULL;
    return (uint32_t)(h >> 32);
}

/* Append a key; -1 when MAX_OPEN_KEYS is reached or memory is short (nothing is lost: the
 * array in place stays valid and the caller frees it). */
static int
push_key(Keys *keys, const unsigned char *start, Py_ssize_t len, uint32_t hash)
{
    if (keys->count == keys->capacity) {
        if (keys->capacity >= MAX_OPEN_KEYS) {
            return -1;
        }
        Py_ssize_t capacity = keys->capacity * 2;
        Key *items;
        if (keys->items == keys->inline_items) {
            items = PyMem_New(Key, capacity);
            if (items != NULL) {
                memcpy(items, keys->items, (size_t)keys->count * sizeof(Key));
            }
        }
        else {
            items = keys->items;
            PyMem_Resize(items, Key, capacity); /* NULL on failure, the old array untouched */
        }
        if (items == NULL) {
            return -1;
        }
        keys->items = items;
        keys->capacity = capacity;
    }
    Key *key = &keys->items[keys->count++];
    key->start = start;
    key->len = len;
    key->hash = hash;
    return 0;
}

/* The four blanks of JSON: space, tab, line feed, carriage return. */
static const unsigned char BLANK[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

static ALWAYS_INLINE const unsigned char *
skip_blank(const unsigned char *p)
{
    while (BLANK[*p]) { /* the NUL at `end` is no blank */
        p++;
    }
    return p;
}

/* The scan proper: a state machine whose states are the labels `value` (a value must come),
 * `key` (a key must come, p is past any blank) and `after_value` (a `,`, the close of the
 * container, or the end of the text). */
static enum answer
scan_text(const unsigned char *p, const unsigned char *end, Keys *keys)
{
    Frame frames[MAX_DEPTH];
    int depth = 0;
    int duplicate = 0;

value:
    p = skip_blank(p);
    if (*p == '"') { /* the most common value first */
        int escaped = 0;
        p = skip_string(p + 1, end, &escaped);
        if (p == NULL) {
            return UNSURE;
        }
        goto after_value;
    }
    if (*p == '{' || *p == '[') {
        if (depth == MAX_DEPTH) {
            return UNSURE;
        }
        Frame *frame = &frames[depth++];
        int object = *p == '{';
        frame->first = object ? keys->count : -1;
        frame->seen[0] = frame->seen[1] = 0;
        p = skip_blank(p + 1);
        if (*p == (object ? '}' : ']')) { /* empty */
            depth--;
            p++;
            goto after_value;
        }
        if (object) {
            goto key;
        }
        goto value;
    }
    p = skip_scalar(p, end);
    if (p == NULL) {
        return UNSURE;
    }
    goto after_value;

key: {
    if (*p != '"') {
        return UNSURE;
    }
    const unsigned char *start = p + 1;
    int escaped = 0;
    p = skip_string(start, end, &escaped);
    if (p == NULL || escaped) {
        return UNSURE; /* not JSON, or a key spelled with an escape */
    }
    Py_ssize_t len = p - 1 - start;
    uint32_t hash = key_hash(start, len, end);
    Frame *frame = &frames[depth - 1];
    if (keys->count - frame->first >= MAX_OBJECT_KEYS) {
        return UNSURE;
    }
    uint64_t bit = 1ULL << (hash & 63);
    uint64_t *seen = &frame->seen[(hash >> 6) & 1];
    if ((*seen & bit) && !duplicate) {
        for (Py_ssize_t i = frame->first; i < keys->count; i++) {
            const Key *k = &keys->items[i];
            if (k->hash == hash && k->len == len && memcmp(k->start, start, (size_t)len) == 0) {
                duplicate = 1; /* go on: the rest must still be JSON */
                break;
            }
        }
    }
    *seen |= bit;
    if (push_key(keys, start, len, hash) < 0) {
        return UNSURE;
    }
    if (*p != ':') { /* usually right after the key */
        p = skip_blank(p);
        if (*p != ':') {
            return UNSURE;
        }
    }
    p++;
    goto value;
}

after_value:
    p = skip_blank(p);
    if (depth == 0) {
        /* the top-level value is done: only the end of the text may follow */
        return p == end ? (duplicate ? DUPLICATE : UNIQUE) : UNSURE;
    }
    Py_ssize_t first = frames[depth - 1].first;
    if (*p == ',') {
        p = skip_blank(p + 1);
        if (first >= 0) {
            goto key;
        }
        goto value;
    }
    if (*p == (first >= 0 ? '}' : ']')) {
        if (first >= 0) {
            keys->count = first; /* the object's keys are done with */
        }
        depth--;
        p++;
        goto after_value;
    }
    return UNSURE; /* anything else, the end of the text included: cut short */
}

PyDoc_STRVAR(scan_doc,
"scan(data, /)\n--\n\n"
"Whether any object of the JSON text `data` (str or bytes) holds the same key twice.\n\n"
"True: no object does. False: one does (which one, and whether it matters, is for the\n"
"caller's exact check to say). None: unsure (a key spelled with a backslash escape, nesting\n"
"deeper than 256, an object with more than 256 keys, more than 4,096 keys in the open\n"
"objects, text that is not valid JSON, or a str that cannot be UTF-8).");

static PyObject *
jsonkeys_scan(PyObject *Py_UNUSED(module), PyObject *data)
{
    const char *text;
    Py_ssize_t size;
    if (PyUnicode_Check(data)) {
        /* No copy for an ASCII str; otherwise CPython caches the UTF-8 form on the str. */
        text = PyUnicode_AsUTF8AndSize(data, &size);
        if (text == NULL) {
            PyErr_Clear(); /* a lone surrogate: not UTF-8, so not for this scan */
            Py_RETURN_NONE;
        }
    }
    else if (PyBytes_Check(data)) {
        text = PyBytes_AS_STRING(data);
        size = PyBytes_GET_SIZE(data);
    }
    else {
        PyErr_Format(PyExc_TypeError, "scan() takes str or bytes, not %.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (text[size] != '\0') {
        Py_RETURN_NONE; /* never so for bytes or a str's UTF-8 (see INVARIANT): a safety net */
    }
    Keys keys;
    keys.items = keys.inline_items;
    keys.count = 0;
    keys.capacity = INLINE_KEYS;
    const unsigned char *start = (const unsigned char *)text;
    enum answer answer = scan_text(start, start + size, &keys);
    if (keys.items != keys.inline_items) {
        PyMem_Free(keys.items);
    }
    switch (answer) {
    case UNIQUE:
        Py_RETURN_TRUE;
    case DUPLICATE:
        Py_RETURN_FALSE;
    default:
        Py_RETURN_NONE;
    }
}

static PyMethodDef jsonkeys_methods[] = {
    {"scan", jsonkeys_scan, METH_O, scan_doc},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase initialisation with no module state: safe in subinterpreters. */
static PyModuleDef_Slot jsonkeys_slots[] = {
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"Duplicate keys in JSON text, found in one pass (the fast check of server.facts).");

static struct PyModuleDef jsonkeys_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "server._jsonkeys",
    .m_doc = module_doc,
    .m_size = 0,
    .m_methods = jsonkeys_methods,
    .m_slots = jsonkeys_slots,
};

PyMODINIT_FUNC
PyInit__jsonkeys(void)
{
    return PyModuleDef_Init(&jsonkeys_module);
}

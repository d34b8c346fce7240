/*
 * standby test-guest workload writer.
 *
 * Appends fixed-size, sequenced, checksummed records so that every crash-consistent cut of the disk holds an
 * exact prefix 0..n-1 of the sequence. Each record is written synchronously (raw: O_DIRECT|O_DSYNC at offset
 * seq*512; file: append + fdatasync) before the next one starts, so a later record on disk implies every
 * earlier one is durable too. The host-side verifier (standby/guest/verify.py, record.py) checks the same
 * layout:
 *
 *   off  size  field
 *     0     8  magic "SBYREC01"
 *     8     4  writer id                       (little endian, like every field)
 *    12     4  flags (bit 0: the cite fields are set)
 *    16     8  sequence number
 *    24     4  cited writer id
 *    28     4  reserved (0)
 *    32     8  cited sequence number
 *    40   464  payload: 58 words, word i = h ^ ((i + 1) * GOLDEN), h = splitmix64((writer << 40) ^ seq)
 *   504     4  tail magic "SBYE"
 *   508     4  CRC-32 (zlib polynomial) of bytes 0..507
 *
 * Usage: writer raw|file TARGET [id=N] [rate=R] [count=N] [cite=PATH] [status=PATH]
 *   rate   records per second (0: as fast as possible)      count  stop after N new records (0: never)
 *   cite   before each record read "WRITER SEQ" (text) from PATH and store it as the record's citation
 *   status after each durable record overwrite PATH with "WRITER SEQ" (what another writer may cite)
 * On start it scans the target for the valid prefix and continues the sequence after it (a file's torn
 * tail is truncated). SIGTERM/SIGINT stop it after the record in flight.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC_SIZE 512
#define PAYLOAD_WORDS 58
#define GOLDEN 0x9E3779B97F4A7C15ULL
#define FLAG_CITE 1u

static volatile sig_atomic_t stop_requested = 0;
static uint32_t crc_table[256];

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }

static void build_record(uint8_t *r, uint32_t writer, uint64_t seq, int cited, uint32_t cw, uint64_t cs) {
    memset(r, 0, REC_SIZE);
    memcpy(r, "SBYREC01", 8);
    put32(r + 8, writer);
    put32(r + 12, cited ? FLAG_CITE : 0);
    put64(r + 16, seq);
    if (cited) { put32(r + 24, cw); put64(r + 32, cs); }
    uint64_t h = splitmix64(((uint64_t)writer << 40) ^ seq);
    for (int i = 0; i < PAYLOAD_WORDS; i++) put64(r + 40 + 8 * i, h ^ ((uint64_t)(i + 1) * GOLDEN));
    memcpy(r + 504, "SBYE", 4);
    put32(r + 508, crc32_of(r, 508));
}

/* A record is valid for position seq when its checksum, header and derived payload all match. */
static int record_valid(const uint8_t *r, uint32_t writer, uint64_t seq) {
    if (memcmp(r, "SBYREC01", 8) != 0 || memcmp(r + 504, "SBYE", 4) != 0) return 0;
    if (get32(r + 508) != crc32_of(r, 508)) return 0;
    if (get32(r + 8) != writer || get64(r + 16) != seq) return 0;
    uint64_t h = splitmix64(((uint64_t)writer << 40) ^ seq);
    for (int i = 0; i < PAYLOAD_WORDS; i++)
        if (get64(r + 40 + 8 * i) != (h ^ ((uint64_t)(i + 1) * GOLDEN))) return 0;
    return 1;
}

/* Length of the valid prefix already on the target, in records. */
static uint64_t scan_prefix(int fd, uint32_t writer, uint64_t limit) {
    uint8_t *buf;
    const size_t chunk = 64 * 1024;
    if (posix_memalign((void **)&buf, 4096, chunk) != 0) return 0;
    uint64_t n = 0;
    for (;;) {
        ssize_t got = pread(fd, buf, chunk, (off_t)(n * REC_SIZE));
        if (got < REC_SIZE) break;
        size_t recs = (size_t)got / REC_SIZE;
        size_t i;
        for (i = 0; i < recs && n < limit; i++, n++)
            if (!record_valid(buf + i * REC_SIZE, writer, n)) { free(buf); return n; }
        if (n >= limit) break;
    }
    free(buf);
    return n;
}

static int read_cite(const char *path, uint32_t *cw, uint64_t *cs) {
    char text[64] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t got = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unsigned w; unsigned long long s;
    if (got <= 0 || sscanf(text, "%u %llu", &w, &s) != 2) return 0;
    *cw = w; *cs = s;
    return 1;
}

static void write_status(const char *path, uint32_t writer, uint64_t seq) {
    char tmp[512], text[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(text, sizeof text, "%u %llu\n", writer, (unsigned long long)seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    if (write(fd, text, (size_t)n) == n) { close(fd); rename(tmp, path); } else close(fd);
}

static void sleep_until(struct timespec *deadline) {
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline, NULL) == EINTR && !stop_requested) {}
}

static void advance(struct timespec *t, long nanos) {
    t->tv_nsec += nanos;
    while (t->tv_nsec >= 1000000000L) { t->tv_nsec -= 1000000000L; t->tv_sec++; }
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "raw") != 0 && strcmp(argv[1], "file") != 0)) {
        fprintf(stderr, "usage: writer raw|file TARGET [id=N] [rate=R] [count=N] [cite=PATH] [status=PATH]\n");
        return 2;
    }
    int raw = strcmp(argv[1], "raw") == 0;
    const char *target = argv[2], *cite = NULL, *status = NULL;
    uint32_t writer = 0; double rate = 0; uint64_t count = 0;
    for (int i = 3; i < argc; i++) {
        if (strncmp(argv[i], "id=", 3) == 0) writer = (uint32_t)strtoul(argv[i] + 3, NULL, 10);
        else if (strncmp(argv[i], "rate=", 5) == 0) rate = strtod(argv[i] + 5, NULL);
        else if (strncmp(argv[i], "count=", 6) == 0) count = strtoull(argv[i] + 6, NULL, 10);
        else if (strncmp(argv[i], "cite=", 5) == 0) cite = argv[i] + 5;
        else if (strncmp(argv[i], "status=", 7) == 0) status = argv[i] + 7;
        else { fprintf(stderr, "writer: unknown option %s\n", argv[i]); return 2; }
    }
    crc_init();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);

    int fd = raw ? open(target, O_RDWR | O_DIRECT | O_DSYNC) : open(target, O_RDWR | O_CREAT, 0644);
    if (fd < 0) { fprintf(stderr, "writer: open %s: %s\n", target, strerror(errno)); return 1; }
    uint64_t capacity = UINT64_MAX;
    if (raw) {
        uint64_t bytes = 0;
        if (ioctl(fd, BLKGETSIZE64, &bytes) == 0) capacity = bytes / REC_SIZE;
    }
    uint64_t seq = scan_prefix(fd, writer, capacity);
    if (!raw && ftruncate(fd, (off_t)(seq * REC_SIZE)) != 0) { perror("writer: ftruncate"); return 1; }
    printf("STANDBY-WRITER-START id=%u mode=%s next=%llu\n", writer, argv[1], (unsigned long long)seq);

    uint8_t *rec;
    if (posix_memalign((void **)&rec, 4096, REC_SIZE) != 0) return 1;
    uint64_t step = rate >= 10 ? (uint64_t)(rate / 5) : 1, written = 0;
    long period = rate > 0 ? (long)(1e9 / rate) : 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    int rc = 0;
    while (!stop_requested && (count == 0 || written < count)) {
        if (seq >= capacity) { printf("STANDBY-WRITER-FULL id=%u\n", writer); break; }
        uint32_t cw = 0; uint64_t cs = 0;
        int cited = cite != NULL && read_cite(cite, &cw, &cs);
        build_record(rec, writer, seq, cited, cw, cs);
        off_t off = (off_t)(seq * REC_SIZE);
        if (pwrite(fd, rec, REC_SIZE, off) != REC_SIZE || (!raw && fdatasync(fd) != 0)) {
            fprintf(stderr, "writer: write seq %llu: %s\n", (unsigned long long)seq, strerror(errno));
            rc = 1;
            break;
        }
        if (status) write_status(status, writer, seq);
        if (seq % step == 0) printf("STANDBY-WRITER id=%u seq=%llu\n", writer, (unsigned long long)seq);
        seq++; written++;
        if (period) { advance(&next, period); sleep_until(&next); }
    }
    printf("STANDBY-WRITER-STOP id=%u next=%llu\n", writer, (unsigned long long)seq);
    close(fd);
    return rc;
}

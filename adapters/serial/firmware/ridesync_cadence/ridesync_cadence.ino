// ridesync DIY cadence sensor: reference firmware for the line protocol v1
// (adapters/serial/LINE_PROTOCOL.md). A reed switch or hall sensor on REED_PIN closes to GND once per
// crank revolution; the board reports cumulative revolutions and the time of the last crank event.
//
// Build (nothing in the repo builds it; any Arduino board with a USB serial port):
//   arduino-cli core install arduino:avr
//   arduino-cli compile --fqbn arduino:avr:uno adapters/serial/firmware/ridesync_cadence
//   arduino-cli upload -p /dev/ttyACM0 --fqbn arduino:avr:uno adapters/serial/firmware/ridesync_cadence
// then: ridesync sensors --serial /dev/ttyACM0 --protocol line --baud 115200
//
// Time: the protocol counts 1/1024 s. Two common shortcuts are wrong:
//   millis() * 1024 / 1000   overflows uint32 once millis() passes 2^32 / 1024 ms (about 70 minutes);
//   micros() >> 10           counts 1.024 ms ticks, not 1/1024 s ones: cadence comes out about 5% high.
// This sketch keeps a 64-bit count of microseconds (micros() itself wraps every 2^32 us, about
// 71.6 minutes; unsigned subtraction carries across the wrap) and converts with 64-bit arithmetic.
// tests/serial/test_firmware_ticks.py mirrors micros64() and sensor_ticks() and checks them against
// exact arithmetic over more than 70 minutes, across the wrap.

#include <Arduino.h>

#ifndef RIDESYNC_BAUD
#define RIDESYNC_BAUD 115200  // must match the reader's --baud
#endif
#ifndef REED_PIN
#define REED_PIN 2  // an interrupt-capable pin (2 or 3 on an Uno)
#endif

static const char DEVICE_ID[] = "reed-01";       // 1-16 of A-Z a-z 0-9 _ . -
static const uint32_t DEBOUNCE_US = 15000;       // ignore bounces: 15 ms is 4000 rpm, far above cadence
static const uint32_t HEARTBEAT_US = 1000000;    // a C line at least once a second
static const uint32_t MIN_GAP_US = 50000;        // and at most 20 a second
static const uint32_t IDENT_EVERY_US = 10000000; // an I line every 10 s

// ---- time -------------------------------------------------------------------------------------------

static uint32_t last_micros = 0;
static uint64_t total_micros = 0;  // microseconds since boot; a uint64 does not wrap in practice

// Microseconds since boot as 64 bits. Call it more often than every 71 minutes (loop() does).
uint64_t micros64() {
  uint32_t now = micros();
  total_micros += (uint32_t)(now - last_micros);  // modulo 2^32: correct across micros()'s wrap
  last_micros = now;
  return total_micros;
}

// Sensor time in 1/1024 s, low 16 bits as the protocol sends them.
uint16_t sensor_ticks(uint64_t us) {
  return (uint16_t)(uint32_t)((uint64_t)us * 1024 / 1000000);
}

// ---- crank events (interrupt) -----------------------------------------------------------------------

static volatile uint16_t isr_revs = 0;
static volatile uint32_t isr_event_micros = 0;  // micros() at the last accepted crank event
static volatile bool isr_seen = false;

void on_crank() {
  uint32_t now = micros();
  if (isr_seen && (uint32_t)(now - isr_event_micros) < DEBOUNCE_US) return;
  isr_seen = true;
  isr_event_micros = now;
  isr_revs++;
}

// ---- lines ------------------------------------------------------------------------------------------

// CRC-16/XMODEM (poly 0x1021, init 0), the same as avr-libc's _crc_xmodem_update, portable to any core.
uint16_t crc_xmodem(const char *s, size_t n) {
  uint16_t crc = 0;
  for (size_t i = 0; i < n; i++) {
    crc ^= (uint16_t)((uint8_t)s[i]) << 8;
    for (uint8_t b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

void send_body(const char *body) {
  char line[72];
  size_t n = strlen(body);
  snprintf(line, sizeof line, "$%s*%04X\n", body, (unsigned)crc_xmodem(body, n));
  Serial.print(line);
}

static uint8_t seq = 0;
static uint16_t sent_revs = 0;
static uint64_t last_line_us = 0;
static uint64_t last_ident_us = 0;
static bool sent_any = false;

void send_ident() {
  char body[40];
  snprintf(body, sizeof body, "I,%s,1", DEVICE_ID);
  send_body(body);
}

void setup() {
  Serial.begin(RIDESYNC_BAUD);
  pinMode(REED_PIN, INPUT_PULLUP);
  attachInterrupt(digitalPinToInterrupt(REED_PIN), on_crank, FALLING);
  micros64();
  send_ident();
}

void loop() {
  uint64_t now_us = micros64();
  noInterrupts();
  uint16_t revs = isr_revs;
  uint32_t event_micros = isr_event_micros;
  bool seen = isr_seen;
  interrupts();
  // The event's 64-bit time: now minus how long ago it was (less than 71 minutes, as loop() runs often).
  uint64_t event_us = seen ? now_us - (uint32_t)(last_micros - event_micros) : 0;

  if (now_us - last_ident_us >= IDENT_EVERY_US) {
    last_ident_us = now_us;
    send_ident();
  }
  bool changed = revs != sent_revs;
  uint64_t since = now_us - last_line_us;
  if (!sent_any || since >= HEARTBEAT_US || (changed && since >= MIN_GAP_US)) {
    char body[40];
    snprintf(body, sizeof body, "C,%u,%u,%u,%u", (unsigned)seq, (unsigned)revs,
             (unsigned)sensor_ticks(event_us), (unsigned)sensor_ticks(now_us));
    send_body(body);
    seq++;  // uint8_t: wraps 255 -> 0 as the protocol wants
    sent_revs = revs;
    last_line_us = now_us;
    sent_any = true;
  }
}

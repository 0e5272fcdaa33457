# One HTTP request as nginx served it: the unit that flows from the shipper
# through ingest and Kafka to the aggregator.
#
# Compatibility rules (Cap'n Proto's own): fields are only ever appended with
# the next ordinal, never renumbered or retyped; enums only gain values. A
# reader that meets an enum value it does not know sees it as `other`-like via
# the generated `NotInSchema` error and must treat it as unknown, not fail.

@0x8cd61987c8560a50;

enum Method {
  other @0;
  get @1;
  head @2;
  post @3;
  put @4;
  delete @5;
  patch @6;
  options @7;
  connect @8;
  trace @9;
}

enum Scheme {
  unknown @0;
  http @1;
  https @2;
}

# $upstream_cache_status; `none` when nginx logged "-" (no cache involved).
enum CacheStatus {
  none @0;
  miss @1;
  bypass @2;
  expired @3;
  stale @4;
  updating @5;
  revalidated @6;
  hit @7;
  other @8;
}

# $ssl_protocol; `none` for plain-text requests.
enum TlsProtocol {
  none @0;
  other @1;
  ssl3 @2;
  tls10 @3;
  tls11 @4;
  tls12 @5;
  tls13 @6;
}

# A log variable the schema has no field for, kept verbatim.
struct Extra {
  key @0 :Text;
  value @1 :Text;
}

struct Request {
  # Nanoseconds since the Unix epoch, from $msec, $time_iso8601 or $time_local.
  timestampNs @0 :Int64;
  # The customer's site: the host, lower-cased, port stripped, or mapped.
  zone @1 :Text;
  # 4 bytes for IPv4, 16 for IPv6, empty when the log had none.
  clientIp @2 :Data;
  method @3 :Method;
  # The method as logged when `method` is `other`.
  methodOther @4 :Text;
  scheme @5 :Scheme;
  host @6 :Text;
  path @7 :Text;
  query @8 :Text;
  # "HTTP/1.1", "HTTP/2.0", ...
  protocol @9 :Text;
  status @10 :UInt16;
  # $bytes_sent, or $body_bytes_sent when that is all the format has.
  responseBytes @11 :UInt64;
  # $request_length.
  requestBytes @12 :UInt64;
  # $request_time in microseconds.
  requestTimeUs @13 :UInt32;
  # $upstream_response_time in microseconds; hasUpstreamTime is false for "-".
  upstreamTimeUs @14 :UInt32;
  hasUpstreamTime @15 :Bool;
  cacheStatus @16 :CacheStatus;
  referer @17 :Text;
  userAgent @18 :Text;
  contentType @19 :Text;
  # ISO 3166-1 alpha-2, upper case; empty when unknown.
  country @20 :Text;
  tlsProtocol @21 :TlsProtocol;
  extras @22 :List(Extra);
}

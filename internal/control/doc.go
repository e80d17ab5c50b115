// Package control is One Socket's control protocol: the server the daemon
// runs on its control socket, the client one-socketctl uses, and a Handler
// that answers from a running broker.
//
// The protocol is one request and one reply per connection on a Unix
// stream socket. The client sends a JSON object on one line (a final
// newline, or the end of its stream, ends it):
//
//	{"command":"status"}
//	{"command":"list"}
//	{"command":"drop","key":"<the key's bytes in base64>"}
//	{"command":"log-level"}                  (ask the level)
//	{"command":"log-level","level":"debug"}  (set it)
//	{"command":"reload"}                     (reread the access policy)
//	{"command":"upgrade"}                    (re-exec the binary, keeping every client)
//	{"command":"metrics"}                    (the metrics, Prometheus text format)
//	{"command":"stop"}
//
// The server answers with one JSON line and closes the connection:
//
//	{"ok":true,"result":...}
//	{"ok":false,"error":"message"}
//
// Results: status gives a [Status]; list an array of [Waiter], longest
// waiting first; drop a [DropResult]; log-level a [LevelResult]; reload a
// [ReloadResult], or an error saying why the file was not taken (the old
// policy stays); upgrade an [UpgradeResult] once the new binary passed its
// check, or an error saying why it did not (the old process keeps
// serving); metrics a [MetricsResult]; stop a [StopResult], sent before the stop begins.
//
// A request larger than [MaxRequestSize] bytes, one not complete within
// [RequestTimeout] of the connection's acceptance, and one arriving while
// [MaxClients] requests are already in progress are refused with an error
// reply. Unknown commands, unknown fields and fields a command does not take
// are errors too, so that a typing mistake is never silently ignored.
//
// The socket's permissions are the only access control: whoever can
// connect can stop the broker. The daemon creates it accordingly.
package control

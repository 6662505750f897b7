// The socket.io peer: the relay most people would pick instead of Chat,
// doing the benchmark's dialogs. A client joins its dialog's room
// ("join", id; answered "joined"), and every "msg" goes to the other side
// of the room. Nothing is kept. WebSocket transport only, no compression,
// as the Rust load generator speaks Engine.IO v4 over a plain WebSocket.
//
// Usage: node server.js [PORT]   (default 0: any free port)
// Prints "listening on 127.0.0.1:PORT" once it accepts connections.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const httpServer = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.end("ok");
  } else {
    res.statusCode = 404;
    res.end();
  }
});
httpServer.on("connection", (socket) => socket.setNoDelay(true));

const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  // The relay's largest frame (SPEC L3).
  maxHttpBufferSize: 64 * 1024,
});

io.on("connection", (socket) => {
  socket.on("join", (room) => {
    socket.join(String(room));
    socket.data.room = String(room);
    socket.emit("joined");
  });
  socket.on("msg", (text) => {
    if (socket.data.room !== undefined) {
      socket.to(socket.data.room).emit("msg", text);
    }
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${httpServer.address().port}`);
});

"""The live lane: the class hub that fans riders' latest values out to their class, and the bike's publisher.

Sans-I/O core: `wire` (inbound messages, WebSocket framing), `slots` (latest value per rider),
`fanout` (per-peer cursors and coalesced frames), `leaderboard`. I/O around it: `hub`, `routes`,
`publisher`. See README.md in this folder for the frame format and endpoints.
"""

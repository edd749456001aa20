"""The baseline for ingress benchmarks: a bare Falcon ASGI endpoint that reads the body and answers 202."""

import falcon
import falcon.asgi


class Accept:
    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        await req.stream.read()
        resp.status = falcon.HTTP_202
        resp.media = {"status": "accepted", "conversation_id": "bare", "message": "Conversation queued for analysis"}


app = falcon.asgi.App()
app.add_route("/api/v1/conversations", Accept())

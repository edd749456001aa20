"""The pieces every rate shared through Redis is built of, as Lua: the server's clock (one clock for every
process, whatever their own) and a sliding log of what was sent. The outbound gate
(:mod:`insights.outbound`) and the webhooks' pace (:mod:`webhooks.pacing`) compose their scripts from them.
"""

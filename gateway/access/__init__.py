"""Who is calling and what they may do: identity (AMQP user_id or a signed envelope), the per-upstream
access policy, tenants that follow the principal, and the reply addresses replies may go to.

identity.py     the principal of one delivery: broker-checked user_id, else a verified signature
signature.py    the x-cmn-signature scheme (sign and verify); the SDK and foreign clients share it
config.py       the upstreams file's ``security:`` section and an upstream's ``access:`` block
policy.py       authorize(caller, request): allow lists, methods, path prefixes, tenants
reply_address.py  where a reply may be published
"""

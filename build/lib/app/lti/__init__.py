"""The LTI 1.3 protocol: keys and JWTs, launch verification, tokens, the AGS client."""

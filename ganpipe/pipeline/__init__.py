"""Pipeline plumbing: params, fixed paths, the stage runner, errors, atomic writes, code deps,
the device policy, random streams and GPU leases. Nothing here imports torch at module level.
"""

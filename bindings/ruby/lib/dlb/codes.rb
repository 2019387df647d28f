# frozen_string_literal: true

module DLB
  # The C API's status codes (+lb_status+: +LB_OK+ and +LB_ERR_*+ in +dlb.h+), as returned by
  # {Error#code}. Stable and never reused; a newer library may add codes.
  module Status
    # +LB_OK+
    OK = 0
    # +LB_ERR_INVALID_ARGUMENT+ ({InvalidArgumentError})
    ERR_INVALID_ARGUMENT = 1
    # +LB_ERR_INVALID_CONFIG+ ({InvalidConfigError})
    ERR_INVALID_CONFIG = 2
    # +LB_ERR_BUFFER_TOO_SMALL+ ({BufferTooSmallError})
    ERR_BUFFER_TOO_SMALL = 3
    # +LB_ERR_PRIMARY_UNAVAILABLE+ ({PrimaryUnavailableError})
    ERR_PRIMARY_UNAVAILABLE = 4
    # +LB_ERR_NO_CAUGHT_UP_REPLICA+ ({NoCaughtUpReplicaError})
    ERR_NO_CAUGHT_UP_REPLICA = 5
    # +LB_ERR_STORE+ ({StoreError})
    ERR_STORE = 6
    # +LB_ERR_PANIC+ ({PanicError})
    ERR_PANIC = 7
    # +LB_ERR_INVALID_LSN+ ({InvalidLsnError})
    ERR_INVALID_LSN = 8
    # +LB_ERR_INVALID_KEY+ ({InvalidKeyError})
    ERR_INVALID_KEY = 9
    # +LB_ERR_REPLICA_UNAVAILABLE+ ({ReplicaUnavailableError})
    ERR_REPLICA_UNAVAILABLE = 10
    # +LB_ERR_QUERY+ ({QueryError})
    ERR_QUERY = 11
    # +LB_ERR_UNKNOWN_HOST+ ({UnknownHostError})
    ERR_UNKNOWN_HOST = 12
    # +LB_ERR_INTERNAL+ ({InternalError})
    ERR_INTERNAL = 13
    # +LB_ERR_LOGGER_UNAVAILABLE+ ({LoggerUnavailableError})
    ERR_LOGGER_UNAVAILABLE = 14
    # +LB_ERR_FORKED+ ({ForkedError})
    ERR_FORKED = 15
  end

  # The C API's route roles (+LB_ROLE_*+ in +dlb.h+); {Route#role} gives them as symbols.
  module Role
    # +LB_ROLE_PRIMARY+
    PRIMARY = 0
    # +LB_ROLE_REPLICA+
    REPLICA = 1
  end

  # The C API's route reasons (+LB_REASON_*+ in +dlb.h+); {Route#reason} gives them as
  # symbols. A newer library may add reasons.
  module Reason
    # +LB_REASON_ROUND_ROBIN+
    ROUND_ROBIN = 0
    # +LB_REASON_CAUGHT_UP_CACHED+
    CAUGHT_UP_CACHED = 1
    # +LB_REASON_CAUGHT_UP_LIVE+
    CAUGHT_UP_LIVE = 2
    # +LB_REASON_NO_LSN_RECORDED+
    NO_LSN_RECORDED = 3
    # +LB_REASON_NO_REPLICAS_CONFIGURED+
    NO_REPLICAS_CONFIGURED = 4
    # +LB_REASON_NO_HEALTHY_REPLICA+
    NO_HEALTHY_REPLICA = 5
    # +LB_REASON_NOT_CAUGHT_UP+
    NOT_CAUGHT_UP = 6
    # +LB_REASON_STORE_ERROR+
    STORE_ERROR = 7
    # +LB_REASON_FORCED_PRIMARY+
    FORCED_PRIMARY = 8
    # +LB_REASON_WRITE+
    WRITE = 9
    # +LB_REASON_REPLICA_UNAVAILABLE+
    REPLICA_UNAVAILABLE = 10
  end
end

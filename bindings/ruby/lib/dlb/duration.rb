# frozen_string_literal: true

module DLB
  # Durations in options: a number of milliseconds (the unit every +*_ms+ option states), or
  # an ActiveSupport::Duration (+30.seconds+), converted by its own length, never by its bare
  # number (+30.seconds+ is 30 000 ms, not 30). Any object that is not a Numeric and answers
  # +in_milliseconds+ counts as a duration, so no dependency on ActiveSupport is needed.
  module Duration
    module_function

    # Whether +value+ is a duration object rather than a number. (ActiveSupport gives every
    # Numeric an +in_milliseconds+ that reads it as seconds, and a Duration claims
    # +is_a?(Numeric)+: +Numeric === value+ asks the real class.)
    def duration?(value)
      !(Numeric === value) && value.respond_to?(:in_milliseconds) # rubocop:disable Style/CaseEquality
    end

    # @param value [Numeric, #in_milliseconds] milliseconds, or a duration object
    # @param name [String, Symbol] the option, named in errors
    # @return [Integer] whole milliseconds (fractions rounded up: 0.5 ms waits 1 ms, not 0)
    # @raise [TypeError] neither a number nor a duration (the message names the option)
    # @raise [ArgumentError] negative or not finite (the message names the option)
    def to_ms(value, name)
      ms = if duration?(value)
             value.in_milliseconds
           elsif value.is_a?(Numeric)
             value
           else
             raise TypeError, "#{name} must be milliseconds (a Numeric) or a duration such as " \
                              "30.seconds (got #{value.class})"
           end
      raise ArgumentError, "#{name} must be a finite, non-negative duration (got #{value.inspect})" unless ms.finite? && ms >= 0

      ms.ceil
    end

    # @param value [Numeric, #in_milliseconds] seconds, or a duration object
    # @param name [String, Symbol] the option, named in errors
    # @return [Integer] whole seconds (rounded up)
    # @raise [TypeError, ArgumentError] as {to_ms}
    def to_s_whole(value, name)
      return (to_ms(value, name) / 1000.0).ceil if duration?(value)

      to_ms(value, name) # a number: already seconds; same checks and rounding
    end

    # A configuration Hash with every duration converted for the C library: under a key
    # ending in +_ms+ to whole milliseconds, under one ending in +_s+ to whole seconds, at
    # any depth. Other values are left as they are (the library checks them and names the
    # field).
    # @param config [Hash]
    # @return [Hash]
    def convert_config(config, path = nil)
      config.to_h do |key, value|
        name = path ? "#{path}.#{key}" : key.to_s
        value = case value
                when Hash then convert_config(value, name)
                when nil, String, true, false, Array then value
                else
                  if key.to_s.end_with?("_ms") then to_ms(value, name)
                  elsif key.to_s.end_with?("_s") then to_s_whole(value, name)
                  else
                    value
                  end
                end
        [key, value]
      end
    end
  end
end

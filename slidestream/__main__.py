"""`python -m slidestream`: the command line (`slidestream.cli.main`)."""

try:
    from slidestream.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself imports, before main() handles it
    from slidestream.interrupts import interrupted_exit

    raise SystemExit(interrupted_exit()) from None

raise SystemExit(main())

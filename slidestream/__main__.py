from slidestream.cli import main

raise SystemExit(main())

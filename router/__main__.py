from router.tools.cli import main

raise SystemExit(main())

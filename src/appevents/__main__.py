from appevents.cli import main

raise SystemExit(main())

"""Database plumbing shared by the stores and the buses that live on the same engines: named SQL
files and migrations (`sql`), and the psycopg edge (`postgres`)."""

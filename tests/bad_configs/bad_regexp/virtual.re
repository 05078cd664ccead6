/(a@/ b@example.org
